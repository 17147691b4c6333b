"""Customers, their devices and their PIN: who may approve a payment at this processor.

Theory of operation (DESIGN.md §6). The back office creates a customer with an account and
a one-time activation code (only its SHA-256 is stored; it expires). The wallet makes a
device key pair and sends an Enrolment signed by the new key, with the code and a PIN
block bound to the enrolment's digest. The key's id is `make_kid("device", jwk)`, which
the wallet computes the same way; the JWS header must name exactly that kid, so the
signature proves possession of the key being registered.

No path sets a PIN without the PIN. Only an account without a credential (a new one, or
one the bank has reset) takes the PIN of its first enrolment, kept only as its
verification value (HMAC under the PIN key held apart from the database). A further
device proves the existing PIN inside that same PIN block: the attempt counts towards the
lockout like a payment's, and a refused enrolment is remembered by its digest until it
expires, so a captured copy sent again gets the same refusal and never a second attempt.
A reset (`reset_credentials`, a back-office action) removes the PIN, revokes every device
and voids unused codes: only the new code it issues can set a PIN again. Every issued
code, added or revoked device, reset and unlock is announced to the account's devices
(semops.processor.notices).

Afterwards the device signs every order and every other call (`DeviceAuth`, bound to
account, method, path and body digest, living a minute or two, and single use: its id is
kept until it expires and a second use is refused as `replay`). A revoked device is
refused. PIN attempts are decided by `semops.crypto.check_pin` and their count is
committed in a transaction of its own, so a refused payment still counts the wrong PIN;
after PIN_ATTEMPTS_MAX the credential stays locked until the back office unlocks it.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Final

import structlog
from sqlalchemy.exc import IntegrityError

from semops.core.encoding import b64url_decode, b64url_encode, sha256_b64url
from semops.core.errors import E, SemopsError, lookup
from semops.core.limits import ACTIVATION_CODE_TTL_S, ADMIN_LIST_MAX, TIMESTAMP_MAX_S
from semops.core.money import Money
from semops.crypto import (
    KeyRing,
    KeyUse,
    PublicKeyRecord,
    check_pin,
    make_kid,
    open_pin_block,
    pin_verification_value,
    read_unverified_claims,
    read_unverified_kid,
)
from semops.ledger import AccountKind
from semops.processor import accounts
from semops.processor.context import Context, new_id
from semops.processor.notices import CUSTOMER, OPERATOR, NoticeKind, account_notices, announce
from semops.protocol import DeviceAuth, Enrolment, open_signed, parse_claims
from semops.store import processor as store
from semops.store.db import Connection

log = structlog.get_logger("semops.processor")

DEVICE_KID_OWNER: Final = "device"
DEVICE_AUTH_SCHEME: Final = "SEMOPS-Device "
# How calls are named in `signed_calls`: a DeviceAuth by its id, an Enrolment by its digest.
AUTH_CALL_PREFIX: Final = "auth:"
ENROLMENT_CALL_PREFIX: Final = "enrolment:"
# Activation codes: 12 characters from 32 unambiguous ones (no 0/O, 1/I) = 60 bits,
# shown as XXXX-XXXX-XXXX so a person can read it out or type it.
_CODE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CODE_GROUPS: Final = 3
_CODE_GROUP_CHARS: Final = 4


def device_kid(jwk: dict[str, str]) -> str:
    """The kid of a device key: the wallet computes the same `make_kid("device", jwk)`."""
    return make_kid(DEVICE_KID_OWNER, jwk)


def check_active(device: dict[str, Any] | None) -> dict[str, Any]:
    """The device row, if there is one and it is active; else the refusal."""
    if device is None:
        raise SemopsError(E.DEVICE_UNKNOWN)
    if device["status"] != "active":
        raise SemopsError(E.DEVICE_REVOKED)
    return device


def device_ring(device: dict[str, Any]) -> KeyRing:
    """A ring holding one enrolled device key; its owner is the device's account."""
    record = PublicKeyRecord(
        kid=device["kid"],
        owner=device["account_id"],
        use=KeyUse.SIGN,
        jwk=json.loads(device["jwk"]),
        not_before=0,
        not_after=TIMESTAMP_MAX_S,
    )
    return KeyRing([record])


def make_activation_code() -> str:
    groups = (
        "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_GROUP_CHARS))
        for _ in range(_CODE_GROUPS)
    )
    return "-".join(groups)


def deposit_ref(account_id: str, reference: str) -> str:
    """The ledger reference of a deposit: one per (account, reference), so a retried
    deposit with the same reference is never booked twice."""
    return "dp_" + sha256_b64url(f"{account_id}\x00{reference}".encode())[:22]


class Customers:
    def __init__(self, context: Context) -> None:
        self.context = context

    # --- back office ----------------------------------------------------------------------

    async def create_customer(
        self, name: str, phone: str, currency: str, deposit_minor: int | None
    ) -> dict[str, Any]:
        context = self.context
        now = context.clock.now()
        customer_id, account_id = new_id("cu"), new_id("ac")
        code = make_activation_code()
        async with context.database.write() as connection:
            await accounts.open_account(connection, account_id, AccountKind.CUSTOMER, currency, now)
            await store.insert_row(
                connection,
                store.customers,
                {
                    "customer_id": customer_id,
                    "account_id": account_id,
                    "name": name,
                    "phone": phone,
                    "currency": currency,
                    "created_at": now,
                },
            )
            await insert_activation_code(
                connection, code, customer_id, account_id, now, sets_pin=True
            )
            if deposit_minor is not None:
                await self._deposit(connection, account_id, deposit_minor, "initial deposit", now)
        log.info("customer_created", currency=currency)
        return {"customer_id": customer_id, "account_id": account_id, "activation_code": code}

    async def deposit(self, account_id: str, amount_minor: int, reference: str) -> dict[str, Any]:
        now = self.context.clock.now()
        async with self.context.database.write() as connection:
            ref = await self._deposit(connection, account_id, amount_minor, reference, now)
            view = await accounts.balance_view(connection, account_id)
        log.info("deposit_booked", amount_minor=amount_minor)
        return {"deposit_id": ref, **view}

    async def _deposit(
        self, connection: Any, account_id: str, amount_minor: int, reference: str, now: int
    ) -> str:
        account = await accounts.snapshot(connection, account_id)
        if account.kind not in (AccountKind.CUSTOMER, AccountKind.MERCHANT):
            raise SemopsError(E.ACCOUNT_UNKNOWN, "deposits go to customer or merchant accounts")
        ref = deposit_ref(account_id, reference)
        amount = Money(amount_minor, account.currency)
        await accounts.deposit(connection, account_id, amount, ref, now)
        if await store.get_row(connection, store.deposits, ref) is None:
            await store.insert_row(
                connection,
                store.deposits,
                {
                    "deposit_ref": ref,
                    "account_id": account_id,
                    "amount_minor": amount_minor,
                    "currency": account.currency,
                    "reference": reference,
                    "created_at": now,
                },
            )
        return ref

    async def account_view(self, account_id: str) -> dict[str, Any]:
        async with self.context.database.read() as connection:
            view = await accounts.balance_view(connection, account_id)
            account = await accounts.snapshot(connection, account_id)
            customer = await store.find_row(connection, store.customers, account_id=account_id)
            payee = await store.find_row(connection, store.payees, account_id=account_id)
            credential = await store.get_row(connection, store.credentials, account_id)
            devices = await store.list_rows(
                connection, store.devices, ADMIN_LIST_MAX, account_id=account_id
            )
        return {
            **view,
            "kind": account.kind.value,
            "status": account.status.value,
            "customer_id": customer["customer_id"] if customer else None,
            "name": customer["name"] if customer else (payee["display_name"] if payee else None),
            "pin_locked": bool(credential["locked"]) if credential else None,
            "devices": [_device_view(device) for device in devices],
        }

    async def unlock(self, account_id: str) -> dict[str, Any]:
        now = self.context.clock.now()
        async with self.context.database.write() as connection:
            changed = await store.update_row(
                connection,
                store.credentials,
                account_id,
                {"failures": 0, "locked": False, "updated_at": now},
            )
            if changed:
                await announce(
                    connection, account_id, NoticeKind.CREDENTIAL_UNLOCKED, OPERATOR, now
                )
        if not changed:
            raise SemopsError(E.NOT_FOUND, "no PIN credential for this account")
        log.warning("credential_unlocked_by_operator", kind="audit")
        return {"account_id": account_id, "pin_locked": False}

    async def reset_credentials(self, account_id: str) -> dict[str, Any]:
        """The bank resets a customer's PIN: the PIN is removed, every device revoked and
        every unused code voided, in one transaction, and a new activation code issued.
        The customer enrols again with it (out of band: letter, SMS, branch) and chooses a
        new PIN; nothing else can set one. The caller audits it (AuditedCustomers)."""
        now = self.context.clock.now()
        code = make_activation_code()
        async with self.context.database.write() as connection:
            customer = await store.find_row(connection, store.customers, account_id=account_id)
            if customer is None:
                raise SemopsError(E.ACCOUNT_UNKNOWN, "no customer has this account")
            revoked = await store.reset_credentials(connection, account_id, now)
            await insert_activation_code(
                connection, code, customer["customer_id"], account_id, now, sets_pin=True
            )
            await announce(connection, account_id, NoticeKind.CREDENTIAL_RESET, OPERATOR, now)
        log.warning("credential_reset_by_operator", kind="audit")
        return {
            "account_id": account_id,
            "activation_code": code,
            "expires_at": now + ACTIVATION_CODE_TTL_S,
            "devices_revoked": revoked,
        }

    async def list_devices(self, account_id: str) -> list[dict[str, Any]]:
        async with self.context.database.read() as connection:
            rows = await store.list_rows(
                connection, store.devices, ADMIN_LIST_MAX, account_id=account_id
            )
        return [_device_view(row) for row in rows]

    async def revoke_device(self, kid: str) -> dict[str, Any]:
        now = self.context.clock.now()
        async with self.context.database.write() as connection:
            device = await store.get_row(connection, store.devices, kid, for_update=True)
            if device is None:
                raise SemopsError(E.NOT_FOUND, "no such device")
            if device["status"] != "revoked":
                await store.update_row(
                    connection, store.devices, kid, {"status": "revoked", "revoked_at": now}
                )
                device = {**device, "status": "revoked", "revoked_at": now}
                await announce(
                    connection,
                    device["account_id"],
                    NoticeKind.DEVICE_REVOKED,
                    OPERATOR,
                    now,
                    device_name=device["device_name"],
                )
        log.warning("device_revoked_by_operator", kind="audit")
        return _device_view(device)

    # --- wallet -----------------------------------------------------------------------------

    async def enrol(self, token: str) -> dict[str, Any]:
        context = self.context
        now = context.clock.now()
        enrolment = self._verify_enrolment(token, now)
        digest = enrolment.enrolment_digest()
        call_id = ENROLMENT_CALL_PREFIX + digest
        await self._refused_before(call_id)
        pin = open_pin_block(enrolment.pin_block, context.keys.enc_key, digest)
        try:
            return await self._enrol(enrolment, pin, call_id, now)
        except IntegrityError:
            # A copy of this very enrolment was refused at the same moment (its refusal is
            # stored, and this attempt's count rolled back), or the same key was enrolled
            # by a concurrent call.
            await self._refused_before(call_id)
            raise SemopsError(E.VALIDATION_FAILED, "this device key is already enrolled") from None

    async def _refused_before(self, call_id: str) -> None:
        """Raise the stored refusal of an enrolment seen before, if it was refused."""
        async with self.context.database.read() as connection:
            seen = await store.get_row(connection, store.signed_calls, call_id)
        if seen is not None and seen["code"] is not None:
            raise SemopsError(lookup(seen["code"]), "this enrolment was refused before")

    async def _enrol(
        self, enrolment: Enrolment, pin: str, call_id: str, now: int
    ) -> dict[str, Any]:
        context = self.context
        kid = device_kid(enrolment.device_jwk.model_dump())
        code_digest = sha256_b64url(enrolment.activation_code.encode("ascii"))
        refusal: SemopsError | None = None
        async with context.database.write() as connection:
            code = await store.get_row(
                connection, store.activation_codes, code_digest, for_update=True
            )
            device = await store.get_row(connection, store.devices, kid)
            if code is not None and code["used_at"] is not None and device is not None:
                if device["account_id"] != code["account_id"]:
                    raise SemopsError(E.ACTIVATION_INVALID)
                if device["status"] != "active":
                    raise SemopsError(E.DEVICE_REVOKED)
                # The same device with the same code again: its answer was lost. The
                # enrolment stands as it was (the PIN is not set or tried a second time).
            elif code is None or code["used_at"] is not None or now >= code["expires_at"]:
                raise SemopsError(E.ACTIVATION_INVALID)
            elif device is not None:
                raise SemopsError(E.VALIDATION_FAILED, "this device key is already enrolled")
            else:
                refusal = await self._admit_device(connection, code, kid, enrolment, pin, now)
                if refusal is not None:
                    await store.insert_row(
                        connection,
                        store.signed_calls,
                        {
                            "call_id": call_id,
                            "kid": kid,
                            "code": refusal.code,
                            "expires_at": enrolment.expires_at,
                            "created_at": now,
                        },
                    )
            account_id = code["account_id"]
            customer = await store.get_row(connection, store.customers, code["customer_id"])
        if refusal is not None:  # raised after the commit: the attempt counts
            self.count_refusal(refusal)
            raise refusal
        assert customer is not None
        return {
            "account_id": account_id,
            "device_kid": kid,
            "customer_name": customer["name"],
            "currency": customer["currency"],
        }

    async def _admit_device(
        self,
        connection: Any,
        code: dict[str, Any],
        kid: str,
        enrolment: Enrolment,
        pin: str,
        now: int,
    ) -> SemopsError | None:
        """Enrol the device with a fresh code: set the PIN if the account has none, else
        check it (counted like any attempt). Returns the PIN's refusal, changing nothing
        else, or None with the device stored and the code used."""
        account_id = code["account_id"]
        credential = await store.get_row(connection, store.credentials, account_id, for_update=True)
        if credential is None:
            if not code["sets_pin"]:
                # A code for a further device, on an account whose PIN was reset since: it
                # must never set the PIN (only the reset's own code does).
                raise SemopsError(E.ACTIVATION_INVALID)
            await self._store_pin(connection, account_id, pin, now)
        else:
            refusal = await self._attempt_pin(connection, credential, pin, now)
            if refusal is not None:
                return refusal
        await self._store_device(connection, kid, account_id, enrolment, now)
        await store.update_row(
            connection, store.activation_codes, code["code_digest"], {"used_at": now}
        )
        await announce(
            connection,
            account_id,
            NoticeKind.DEVICE_ENROLLED,
            CUSTOMER,
            now,
            device_name=enrolment.device_name,
        )
        log.info("device_enrolled", kind="first" if credential is None else "further")
        return None

    def _verify_enrolment(self, token: str, now: int) -> Enrolment:
        # The key that signs an enrolment is the one it registers: read it from the claims,
        # require the header to name exactly its kid, then verify with it.
        header_kid = read_unverified_kid(token)
        unverified = parse_claims(read_unverified_claims(token), Enrolment)
        jwk = unverified.device_jwk.model_dump()
        kid = device_kid(jwk)
        if header_kid != kid:
            raise SemopsError(E.SIGNATURE_INVALID, "the kid must be make_kid('device', jwk)")
        record = PublicKeyRecord(
            kid=kid,
            owner=DEVICE_KID_OWNER,
            use=KeyUse.SIGN,
            jwk=jwk,
            not_before=0,
            not_after=TIMESTAMP_MAX_S,
        )
        return open_signed(token, Enrolment, KeyRing([record]), now).message

    async def _store_device(
        self, connection: Any, kid: str, account_id: str, enrolment: Enrolment, now: int
    ) -> None:
        await store.insert_row(
            connection,
            store.devices,
            {
                "kid": kid,
                "account_id": account_id,
                "jwk": json.dumps(enrolment.device_jwk.model_dump(), sort_keys=True),
                "device_name": enrolment.device_name,
                "status": "active",
                "created_at": now,
                "revoked_at": None,
            },
        )

    async def _store_pin(self, connection: Any, account_id: str, pin: str, now: int) -> None:
        """The first PIN of an account without one: an insert, never an overwrite (a
        concurrent first enrolment fails on the key and is rolled back)."""
        value = b64url_encode(pin_verification_value(self.context.keys.pin_key, account_id, pin))
        await store.insert_row(
            connection,
            store.credentials,
            {
                "account_id": account_id,
                "pin_value": value,
                "failures": 0,
                "locked": False,
                "updated_at": now,
            },
        )

    async def active_device(self, kid: str) -> dict[str, Any]:
        async with self.context.database.read() as connection:
            device = await store.get_row(connection, store.devices, kid)
        return check_active(device)

    async def authenticate(
        self, header: str | None, method: str, path: str, body: bytes
    ) -> dict[str, Any]:
        """The device behind a `SEMOPS-Device <JWS DeviceAuth>` header, for this very call."""
        if header is None or not header.startswith(DEVICE_AUTH_SCHEME):
            raise SemopsError(E.UNAUTHENTICATED, "a device authorisation is required")
        token = header[len(DEVICE_AUTH_SCHEME) :].strip()
        device = await self.active_device(read_unverified_kid(token))
        auth = open_signed(token, DeviceAuth, device_ring(device), self.context.clock.now()).message
        expected_digest = sha256_b64url(body) if body else None
        if (
            auth.account_id != device["account_id"]
            or auth.method != method
            or auth.path != path
            or auth.body_digest != expected_digest
        ):
            raise SemopsError(E.UNAUTHENTICATED, "the authorisation is for another call")
        await self._use_once(auth, device["kid"])
        return device

    async def _use_once(self, auth: DeviceAuth, kid: str) -> None:
        """Spend the authorisation's id; a second use (a captured copy) is `replay`."""
        try:
            async with self.context.database.write() as connection:
                await store.insert_row(
                    connection,
                    store.signed_calls,
                    {
                        "call_id": AUTH_CALL_PREFIX + auth.auth_id,
                        "kid": kid,
                        "code": None,
                        "expires_at": auth.expires_at,
                        "created_at": self.context.clock.now(),
                    },
                )
        except IntegrityError:
            raise SemopsError(E.REPLAY, "this device authorisation was used already") from None

    async def prune_signed_calls(self) -> int:
        """Forget calls that have expired (a copy of one is refused as expired now)."""
        async with self.context.database.write() as connection:
            return await store.prune_signed_calls(connection, self.context.clock.now())

    async def notices(self, account_id: str) -> list[dict[str, Any]]:
        async with self.context.database.read() as connection:
            return await account_notices(connection, account_id)

    async def issue_activation_code(self, account_id: str) -> dict[str, Any]:
        """A further activation code the bank issues for an existing customer (a new phone),
        announced to its devices. Enrolling with it proves the account's PIN, unless the
        account never had one."""
        now = self.context.clock.now()
        code = make_activation_code()
        async with self.context.database.write() as connection:
            customer = await store.find_row(connection, store.customers, account_id=account_id)
            if customer is None:
                raise SemopsError(E.ACCOUNT_UNKNOWN)
            # An account that never chose a PIN (its first code lost or expired) chooses it
            # with this code; any other enrols a further device, which proves the PIN.
            credential = await store.get_row(
                connection, store.credentials, account_id, for_update=True
            )
            await insert_activation_code(
                connection,
                code,
                customer["customer_id"],
                account_id,
                now,
                sets_pin=credential is None,
            )
            await announce(connection, account_id, NoticeKind.ACTIVATION_CODE_ISSUED, OPERATOR, now)
        log.info("activation_code_issued", kind="audit")
        return {"activation_code": code, "expires_at": now + ACTIVATION_CODE_TTL_S}

    async def issue_code_for_device(self, account_id: str, kid: str, pin: str) -> dict[str, Any]:
        """A code to add a device, asked for by the enrolled device `kid` and approved with
        the PIN. One transaction: the credential must still exist, the device must still be
        active and the PIN right (counted like any attempt), so a reset committing at the
        same moment cannot be outrun by a code that would then set a new PIN; and the code
        never sets one (`sets_pin` false)."""
        now = self.context.clock.now()
        code = make_activation_code()
        refusal: SemopsError | None = None
        async with self.context.database.write() as connection:
            credential = await store.get_row(
                connection, store.credentials, account_id, for_update=True
            )
            device = await store.get_row(connection, store.devices, kid, for_update=True)
            if device is None or device["account_id"] != account_id:
                raise SemopsError(E.DEVICE_UNKNOWN)
            if device["status"] != "active":
                raise SemopsError(E.DEVICE_REVOKED)
            if credential is None:
                raise SemopsError(E.FORBIDDEN, "no PIN is set for this account")
            refusal = await self._attempt_pin(connection, credential, pin, now)
            if refusal is None:
                customer = await store.find_row(connection, store.customers, account_id=account_id)
                if customer is None:
                    raise SemopsError(E.ACCOUNT_UNKNOWN)
                await insert_activation_code(
                    connection, code, customer["customer_id"], account_id, now, sets_pin=False
                )
                await announce(
                    connection, account_id, NoticeKind.ACTIVATION_CODE_ISSUED, CUSTOMER, now
                )
        if refusal is not None:  # raised after the commit: the attempt counts
            self.count_refusal(refusal)
            raise refusal
        log.info("activation_code_issued", kind="audit")
        return {"activation_code": code, "expires_at": now + ACTIVATION_CODE_TTL_S}

    async def verify_pin(
        self, account_id: str, pin: str, refusal: dict[str, Any] | None = None
    ) -> None:
        """One PIN attempt; its outcome is committed even when the payment is refused.

        `refusal` (an `order_refusals` row without its code) is stored in the same
        transaction when the PIN is refused, so that one order can count as one attempt
        only: a copy of it arriving at the same moment fails on the order id and rolls its
        count back (IntegrityError for the caller)."""
        async with self.context.database.write() as connection:
            error = await self.attempt_pin(connection, account_id, pin, refusal)
        if error is not None:
            self.count_refusal(error)
            raise error

    async def attempt_pin(
        self,
        connection: Connection,
        account_id: str,
        pin: str,
        refusal: dict[str, Any] | None = None,
    ) -> SemopsError | None:
        """`verify_pin` inside the caller's write transaction (a payment's reservation
        takes its PIN attempt in the same one): the refusal is returned, stored, for the
        caller to count and raise after the commit, so that the attempt counts even though
        the payment does not happen."""
        credential = await store.get_row(connection, store.credentials, account_id, for_update=True)
        if credential is None:
            raise SemopsError(E.FORBIDDEN, "no PIN is set for this account")
        error = await self._attempt_pin(connection, credential, pin, self.context.clock.now())
        if error is not None and refusal is not None:
            await store.insert_row(connection, store.order_refusals, refusal | {"code": error.code})
        return error

    async def _attempt_pin(
        self, connection: Any, credential: dict[str, Any], pin: str, now: int
    ) -> SemopsError | None:
        """Decide one attempt against a locked-for-update credential and store its count;
        the refusal, if any, is returned for the caller to raise after its commit."""
        account_id = credential["account_id"]
        result = check_pin(
            self.context.keys.pin_key,
            account_id,
            pin,
            b64url_decode(credential["pin_value"]),
            int(credential["failures"]),
            bool(credential["locked"]),
        )
        if (result.failures, result.locked) != (credential["failures"], credential["locked"]):
            await store.update_row(
                connection,
                store.credentials,
                account_id,
                {"failures": result.failures, "locked": result.locked, "updated_at": now},
            )
        return result.error

    def count_refusal(self, error: SemopsError) -> None:
        kind = "locked" if error.spec is E.PIN_LOCKED else "wrong"
        self.context.metrics.pin_failures.labels(kind).inc()
        log.info("pin_refused", code=error.code)


async def insert_activation_code(
    connection: Any, code: str, customer_id: str, account_id: str, now: int, *, sets_pin: bool
) -> None:
    """Store a new code as its digest only; it is shown once to whoever issued it.
    `sets_pin`: whether enrolling with it may set the PIN of an account that has none
    (a new account's code, a reset's); a code for a further device never may."""
    await store.insert_row(
        connection,
        store.activation_codes,
        {
            "code_digest": sha256_b64url(code.encode("ascii")),
            "customer_id": customer_id,
            "account_id": account_id,
            "expires_at": now + ACTIVATION_CODE_TTL_S,
            "used_at": None,
            "created_at": now,
            "sets_pin": sets_pin,
        },
    )


def _device_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "kid": row["kid"],
        "account_id": row["account_id"],
        "device_name": row["device_name"],
        "status": row["status"],
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
    }
