"""The merchant backend: orders and their payment requests, the processor's signed notices,
refunds, QR codes and the checkout page. Its own service, database and settings."""

from semops.merchant.app import create_merchant_app
from semops.merchant.core import MERCHANT_ORDER, MerchantOrderEvent, MerchantOrderState
from semops.merchant.main import build_service, run
from semops.merchant.service import MerchantService, MerchantSettings
from semops.merchant.trust import ProcessorTrust, trusted_keys

__all__ = [
    "MERCHANT_ORDER",
    "MerchantOrderEvent",
    "MerchantOrderState",
    "MerchantService",
    "MerchantSettings",
    "ProcessorTrust",
    "build_service",
    "create_merchant_app",
    "run",
    "trusted_keys",
]
