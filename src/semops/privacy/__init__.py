"""Who may see what: DESIGN.md §5 as data, and a check that reads every actor's data.

`check_exposure(data_dir)` reads every table, log line and stored message of every actor
of a network and reports each sensitive datum found outside its column of the policy
table (`POLICY`), with the counts of what it read. `semops audit exposure DATA_DIR` runs
it from the command line.
"""

from semops.privacy.check import (
    ActorCounts,
    ExposureReport,
    Finding,
    check_exposure,
    check_exposure_async,
)
from semops.privacy.encodings import Form, forms_of, jose_tokens, mask
from semops.privacy.policy import (
    COLUMNS,
    NOBODY,
    POLICY,
    ActorKind,
    ActorRef,
    Category,
    Cell,
    Owner,
    OwnerKind,
    Role,
    cell,
    role_of,
)
from semops.privacy.search import Corpus, Place
from semops.privacy.sensitive import Datum, SensitiveData, customer, participant, payee
from semops.privacy.sources import Actor, read_tables, sqlite_read_url

__all__ = [
    "COLUMNS",
    "NOBODY",
    "POLICY",
    "Actor",
    "ActorCounts",
    "ActorKind",
    "ActorRef",
    "Category",
    "Cell",
    "Corpus",
    "Datum",
    "ExposureReport",
    "Finding",
    "Form",
    "Owner",
    "OwnerKind",
    "Place",
    "Role",
    "SensitiveData",
    "cell",
    "check_exposure",
    "check_exposure_async",
    "customer",
    "forms_of",
    "jose_tokens",
    "mask",
    "participant",
    "payee",
    "read_tables",
    "role_of",
    "sqlite_read_url",
]
