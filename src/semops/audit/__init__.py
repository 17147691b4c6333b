"""Audit and settlement evidence (DESIGN.md §8).

Pure: `chain` (the hash-chained log with signed checkpoints and its verifier), `report`
(settlement reports, statements, headroom) and `reconcile` (a processor's records against
its statement). Shells: `log.AuditLog` (appends to a service's database) and `verify`
(`semops audit verify` over a network's data folder).
"""

from semops.audit.chain import (
    ALLOWED_DATA_FIELDS,
    CHECKPOINT_EVERY,
    CHECKPOINT_KIND,
    GENESIS_HASH,
    AuditDataError,
    AuditEntry,
    Break,
    ChainReport,
    ChainVerifier,
    make_checkpoint,
    next_entry,
    verify_chain,
)
from semops.audit.log import AuditLog
from semops.audit.reconcile import DIFFERENCE_KINDS, Difference, LocalTransfer, reconcile
from semops.audit.report import (
    CommittedTransfer,
    CurrencyPosition,
    HeadroomLine,
    ParticipantSettlement,
    SettledTransfer,
    SettlementHeadroom,
    SettlementQuery,
    SettlementReport,
    SettlementStatement,
    build_report,
    cap_allows,
    report_digest,
    statement_for,
    summary_csv,
    transfers_csv,
)

__all__ = [
    "ALLOWED_DATA_FIELDS",
    "CHECKPOINT_EVERY",
    "CHECKPOINT_KIND",
    "DIFFERENCE_KINDS",
    "GENESIS_HASH",
    "AuditDataError",
    "AuditEntry",
    "AuditLog",
    "Break",
    "ChainReport",
    "ChainVerifier",
    "CommittedTransfer",
    "CurrencyPosition",
    "Difference",
    "HeadroomLine",
    "LocalTransfer",
    "ParticipantSettlement",
    "SettledTransfer",
    "SettlementHeadroom",
    "SettlementQuery",
    "SettlementReport",
    "SettlementStatement",
    "build_report",
    "cap_allows",
    "make_checkpoint",
    "next_entry",
    "reconcile",
    "report_digest",
    "statement_for",
    "summary_csv",
    "transfers_csv",
    "verify_chain",
]
