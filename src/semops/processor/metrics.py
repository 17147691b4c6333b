"""The processor's Prometheus metrics, in a registry of its own (one per service object,
so several processors in one test process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Payment latency buckets: an on-us payment takes milliseconds, a routed one crosses two
# more services; 30 s is the transfer TTL, beyond which the wallet is told "pending".
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.payments = Counter(
            "semops_processor_payments_total",
            "Payment orders answered, by outcome (completed, failed, pending, refused)",
            ["outcome"],
            registry=self.registry,
        )
        self.payment_seconds = Histogram(
            "semops_processor_payment_seconds",
            "Time to answer a payment order",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.inbound = Counter(
            "semops_processor_inbound_transfers_total",
            "Routed prepares answered, by outcome (accepted, rejected)",
            ["outcome"],
            registry=self.registry,
        )
        self.refunds = Counter(
            "semops_processor_refunds_total",
            "Refunds sent or received, by direction and outcome",
            ["direction", "outcome"],
            registry=self.registry,
        )
        self.pin_failures = Counter(
            "semops_processor_pin_failures_total",
            "Wrong PINs, and credentials locked by them",
            ["kind"],
            registry=self.registry,
        )
        self.directory_entry_mismatch = Gauge(
            "semops_processor_directory_entry_mismatch",
            "Parts of our own directory entry that differ from what we registered (0: none)",
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "semops_processor_outbox_pending",
            "Payment notices not yet acknowledged by a merchant webhook",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
