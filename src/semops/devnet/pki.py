"""The scheme PKI of a local network: a root CA and a certificate pair per participant.

Made once per data directory (re-running finds the files and leaves them alone), through
the same code as `semops pki init` and `semops pki issue`.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path


def ensure_pki(data_dir: Path, participants: dict[str, str]) -> None:
    """Root CA in DATA/pki, and for each {participant id: role} its keys in DATA/<id>."""
    # Imported here: the `semops` command package imports the devnet (up, demo, bench).
    from semops.cli import pki as pki_cli

    pki_dir = data_dir / "pki"
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        if not (pki_dir / pki_cli.ROOT_CERT_FILE).exists():
            pki_cli.init(directory=pki_dir, name=pki_cli.DEFAULT_ROOT_NAME)
        for participant_id, role in participants.items():
            out = data_dir / participant_id
            if (out / f"{participant_id}.crt").exists():
                continue
            pki_cli.issue(
                party_id=participant_id,
                role=pki_cli.RoleChoice(role),
                directory=pki_dir,
                out=out,
                hosts=None,
                ips=None,
            )
