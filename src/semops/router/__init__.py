"""The router service: directory, commit point, net positions (DESIGN.md §2-§3, §8)."""

from semops.router.main import RouterSettings, run
from semops.router.service import Router, RouterIdentity

__all__ = ["Router", "RouterIdentity", "RouterSettings", "run"]
