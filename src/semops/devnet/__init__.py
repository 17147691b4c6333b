"""A whole SEMOPS network on one machine: PKI, processes, demo data (for up/demo/bench/tests)."""

from semops.devnet.pki import ensure_pki
from semops.devnet.processes import ServiceProcess, free_port

__all__ = ["ServiceProcess", "ensure_pki", "free_port"]
