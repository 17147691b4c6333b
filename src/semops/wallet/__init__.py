"""The customer's wallet: a pure core (requests, orders, PIN binding, receipts), its local
state (device key and orders in one folder), and the operations the CLI calls."""

from semops.wallet.client import HttpTransport, Transport
from semops.wallet.core import (
    TrustedConfig,
    build_enrolment,
    build_order,
    check_receipt,
    make_device_key,
    parse_payment_input,
    pay_link,
    verify_config,
    verify_request,
)
from semops.wallet.service import PaymentOutcome, VerifiedRequest, Wallet
from semops.wallet.store import DEFAULT_WALLET_DIR, Enrolled, OrderRecord, WalletStore

__all__ = [
    "DEFAULT_WALLET_DIR",
    "Enrolled",
    "HttpTransport",
    "OrderRecord",
    "PaymentOutcome",
    "Transport",
    "TrustedConfig",
    "VerifiedRequest",
    "Wallet",
    "WalletStore",
    "build_enrolment",
    "build_order",
    "check_receipt",
    "make_device_key",
    "parse_payment_input",
    "pay_link",
    "verify_config",
    "verify_request",
]
