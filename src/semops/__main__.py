"""`python -m semops` is the `semops` command."""

from semops.cli import main

main()
