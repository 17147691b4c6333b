"""The processor service: one code base for every bank and MNO of the scheme
(DESIGN.md §2-§7): enrolment, payer side, payee side, refunds, ledger, back office."""

from semops.processor.app import create_operator_app, create_public_app, create_scheme_app
from semops.processor.enrolment import DEVICE_KID_OWNER, device_kid
from semops.processor.keys import ProcessorKeys, load_keys
from semops.processor.main import build_processor, run
from semops.processor.service import Processor
from semops.processor.settings import ProcessorKind, ProcessorSettings

__all__ = [
    "DEVICE_KID_OWNER",
    "Processor",
    "ProcessorKeys",
    "ProcessorKind",
    "ProcessorSettings",
    "build_processor",
    "create_operator_app",
    "create_public_app",
    "create_scheme_app",
    "device_kid",
    "load_keys",
    "run",
]
