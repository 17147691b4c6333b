"""Time the four JOSE recipes: the joserfc version (from git) against the current one.

    .venv/bin/python -m tests.crypto.bench_recipes [--old-rev REV] [--count N]

A measurement, not a test (nothing here asserts a time): it loads `crypto/keys.py` and
`crypto/jose.py` as they were at REV (by default the last commit whose recipes were built on
joserfc) into this process next to the current ones, checks that each side verifies and
opens the other's tokens, then runs N of each recipe per side (best of five rounds, which
alternate between the sides) and prints microseconds per operation.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from semops import crypto
from semops.crypto import KeyRing, KeyStatus, KeyUse

# The last commit of main with the joserfc recipes (the parent of this rewrite).
JOSERFC_REV: Final = "a68ab29"
ROOT: Final = Path(__file__).resolve().parents[2]
NOW: Final = 1_790_000_000
ROUNDS: Final = 5
CLAIMS: Final = {  # about the size of a TransferPrepare's claims
    "v": 1,
    "type": "TransferPrepare",
    "transfer_id": "tr_bench-00000000000000",
    "payer_processor": "bank-a",
    "payee_processor": "bank-b",
    "amount_minor": 1250,
    "currency": "EUR",
    "condition": "C" * 43,
    "created_at": NOW,
    "expires_at": NOW + 30,
    "request_id": "rq_bench-00000000000000",
    "payer_ref": "R" * 43,
}


def _source(rev: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{rev}:{path}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up while building a class
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # our own code, from git
    return module


def load_old(rev: str) -> types.ModuleType:
    """The old jose module, on the old keys module, sharing today's KeyUse and KeyStatus
    (so today's KeyRing, which compares them by identity, resolves the old records)."""
    keys_source = _source(rev, "src/semops/crypto/keys.py")
    jose_source = _source(rev, "src/semops/crypto/jose.py")
    if "joserfc" not in jose_source:
        raise SystemExit(f"{rev}: crypto/jose.py does not use joserfc; pass --old-rev")
    old_keys = _module("_bench_old_keys", keys_source)
    old_keys.KeyUse, old_keys.KeyStatus = KeyUse, KeyStatus
    jose_source = jose_source.replace(
        "from semops.crypto.keys import", "from _bench_old_keys import"
    )
    old_jose = _module("_bench_old_jose", jose_source)
    old_jose.derive_key = old_keys.derive_key
    return old_jose


def _seed(label: str) -> bytes:
    return hashlib.sha384(f"SEMOPS bench TEST key {label}".encode()).digest()


class Side:
    """One implementation's four recipes, with keys, a ring and ready-made tokens."""

    def __init__(self, jose: Any) -> None:
        self.jose = jose
        self.signer = jose.derive_key("bank-a", KeyUse.SIGN, _seed("sig"))
        self.recipient = jose.derive_key("bank-b", KeyUse.ENCRYPT, _seed("enc"))
        self.record = self.recipient.public_record(NOW - 60, NOW + 60, KeyStatus.ACTIVE)
        self.ring = KeyRing([self.signer.public_record(NOW - 60, NOW + 60, KeyStatus.ACTIVE)])
        self.signed = jose.sign_message(CLAIMS, self.signer)
        self.sealed = jose.seal_for(CLAIMS, self.record)

    def operations(self) -> dict[str, Callable[[], object]]:
        jose = self.jose
        return {
            "sign": lambda: jose.sign_message(CLAIMS, self.signer),
            "verify": lambda: jose.verify_message(self.signed, self.ring, NOW),
            "seal": lambda: jose.seal_for(CLAIMS, self.record),
            "open": lambda: jose.open_sealed(self.sealed, self.recipient),
        }


def _check_interop(old: Side, new: Side) -> None:
    # Same seeds, so the same keys and kids on both sides.
    assert old.signer.kid == new.signer.kid and old.recipient.kid == new.recipient.kid
    assert new.jose.verify_message(old.signed, new.ring, NOW).claims == CLAIMS
    assert old.jose.verify_message(new.signed, old.ring, NOW).claims == CLAIMS
    assert new.jose.open_sealed(old.sealed, new.recipient) == CLAIMS
    assert old.jose.open_sealed(new.sealed, old.recipient) == CLAIMS
    assert old.signed.split(".")[:2] == new.signed.split(".")[:2]  # deterministic part


def _microseconds_per_op(operations: list[Callable[[], object]], count: int) -> list[float]:
    """Best time per op of each operation; rounds alternate between them, so that a busy
    machine slows both sides alike."""
    for operation in operations:
        for _ in range(count // 20):  # warm caches and the allocator
            operation()
    best = [float("inf")] * len(operations)
    for _ in range(ROUNDS):
        for index, operation in enumerate(operations):
            started = time.perf_counter_ns()
            for _ in range(count):
                operation()
            best[index] = min(best[index], (time.perf_counter_ns() - started) / count / 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-rev", default=JOSERFC_REV)
    parser.add_argument("--count", type=int, default=2000)
    arguments = parser.parse_args()
    old, new = Side(load_old(arguments.old_rev)), Side(crypto)
    _check_interop(old, new)
    print(f"{arguments.count} ops each, best of {ROUNDS} alternating rounds, µs/op")
    print(f"{'recipe':<8}{'joserfc':>10}{'direct':>10}{'speed-up':>10}")
    new_operations = new.operations()
    for name, old_operation in old.operations().items():
        before, after = _microseconds_per_op([old_operation, new_operations[name]], arguments.count)
        print(f"{name:<8}{before:>10.1f}{after:>10.1f}{before / after:>9.2f}x")


if __name__ == "__main__":
    main()
