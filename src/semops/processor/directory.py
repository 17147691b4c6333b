"""The router as this processor sees it: the link to it and its signed directory.

Theory of operation. Trust starts at the scheme root certificate in the data directory.
The router's directory document carries the router's certificate: it must chain to the
root and name a party of role *router*; only then is the directory's signature checked
with that certificate's key, and only a directory that passed both becomes the key ring
every other message is verified with (processors' signing keys, the keys to seal to).

The directory is re-read periodically, and on demand when a message names a kid or a
processor the current one does not know (at most every DIRECTORY_REFRESH_MIN_INTERVAL_S,
so bogus kids cannot make us hammer the router). A processor joins by sending a signed
ParticipantRegistration; the answer is the new directory, checked like any other. A key
the directory lists as revoked is refused, our own included.

Keys rotate without the scheme operator: put the new certificates and keys in place, keep
the key the router knows as `ID.previous.key`, restart. The registration is then signed by
the new key and endorsed by the previous one (`protocol.sign_registration`), which is what
the router asks of a change (DESIGN.md §6). Without that endorsement the router holds the
change for its operator and the directory keeps showing the old entry.

Every directory installed (refreshed, or the answer to a registration) is compared with
what we registered: our signing and encryption kids, endpoint, kind, display name and
status. A difference is an alarm -- someone else's key may now speak or be sealed to in
our name (issue 11, H1) -- raised as an error log line, the gauge
`semops_processor_directory_entry_mismatch` and a banner in the back office. We do not
re-register to "fix" it: a change the operator approved or our own key signed cannot be
undone by us (our registration would only be held for the operator, which our restart does
anyway), and the remedy is the operator's (revoke, approve the right entry).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from semops.core.clock import Clock
from semops.core.errors import E, SemopsError
from semops.core.limits import (
    AUTH_TTL_MAX_S,
    DIRECTORY_MAX_BYTES,
    DIRECTORY_REFRESH_MIN_INTERVAL_S,
    ROUTER_QUERY_TIMEOUT_S,
)
from semops.crypto import KeyRing, KeyUse, PrivateKey, private_key_for
from semops.crypto.pki import certificate_pem, load_certificate_pem
from semops.processor.keys import ProcessorKeys
from semops.processor.metrics import Metrics
from semops.processor.settings import ProcessorSettings
from semops.protocol import (
    Directory,
    ExpectedEntry,
    Message,
    ParticipantRegistration,
    Signed,
    entry_differences,
    open_signed,
    sign_registration,
)
from semops.protocol.directory import verify_directory
from semops.service.files import read_private_key
from semops.service.http import error_from_problem

log = structlog.get_logger("semops.processor")

M = TypeVar("M", bound=Message)


class HttpClient(Protocol):
    """What the processor needs of an HTTP client (semops.service.http.Peer fits)."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float,
        jose: str | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, bytes]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, content type and body."""

    status: int
    content_type: str
    body: bytes

    def text(self) -> str:
        return self.body.decode("ascii", errors="replace").strip()


class RouterLink:
    """Calls to the router's scheme port (mutual TLS); transport failures raise SemopsError."""

    def __init__(self, client: HttpClient, router_url: str) -> None:
        self.client = client
        self.router_url = router_url.rstrip("/")

    async def call(
        self, method: str, path: str, *, timeout_s: float, jose: str | None = None
    ) -> Reply:
        status, content_type, body = await self.client.request(
            method, self.router_url + path, timeout_s=timeout_s, jose=jose
        )
        return Reply(status, content_type, body)


@dataclass(frozen=True, slots=True)
class DirectorySnapshot:
    directory: Directory
    token: str
    router_certificate_pem: str
    ring: KeyRing

    @property
    def router_id(self) -> str:
        return self.directory.router_id


def verify_directory_document(document: Any, keys: ProcessorKeys, now: int) -> DirectorySnapshot:
    """A directory document the router answered, checked from the root down."""
    if not isinstance(document, dict):
        raise SemopsError(E.DIRECTORY_INVALID, "the directory document is not an object")
    token, certificate_text = document.get("directory"), document.get("router_certificate")
    if not isinstance(token, str) or not isinstance(certificate_text, str):
        raise SemopsError(E.DIRECTORY_INVALID, "the directory document is incomplete")
    try:
        certificate = load_certificate_pem(certificate_text.encode("ascii"))
    except ValueError as error:
        raise SemopsError(E.CERTIFICATE_INVALID, "the router certificate cannot be read") from error
    directory = verify_directory(token, certificate, keys.root_certificate, now)
    return DirectorySnapshot(
        directory=directory,
        token=token,
        router_certificate_pem=certificate_pem(certificate).decode("ascii"),
        ring=KeyRing(directory.key_records()),
    )


def previous_key_file(data_dir: Path, processor_id: str) -> Path:
    """Where a rotation keeps the signing key the router still knows (0600, like the key)."""
    return data_dir / f"{processor_id}.previous.key"


def load_previous_sign_key(data_dir: Path, processor_id: str) -> PrivateKey | None:
    path = previous_key_file(data_dir, processor_id)
    if not path.exists():
        return None
    return private_key_for(processor_id, KeyUse.SIGN, read_private_key(path))


class DirectoryCache:
    """The newest verified directory, and the key ring built from it."""

    def __init__(
        self,
        settings: ProcessorSettings,
        keys: ProcessorKeys,
        link: RouterLink,
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.link = link
        self.clock = clock
        self.metrics = metrics
        self.snapshot: DirectorySnapshot | None = None
        # Only on-demand refreshes are throttled: the first unknown name always triggers one.
        self._last_on_demand_monotonic = float("-inf")
        # Our own keys are always known, so on-us requests verify before the first fetch.
        self._own = KeyRing([keys.sign_record(), keys.enc_record()])
        self._ring = self._own
        self.previous_sign_key = load_previous_sign_key(settings.data_dir, settings.processor_id)
        # How our own entry differs from what we registered (empty: it matches).
        self.entry_differences: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.snapshot is not None

    @property
    def ring(self) -> KeyRing:
        """The directory's keys, and ours where the directory does not list them yet (a key
        the directory lists, revoked or not, is taken as the directory says)."""
        return self._ring

    def revoked_serials(self) -> frozenset[int]:
        """Certificate serials the current directory revokes (refused at our scheme port)."""
        if self.snapshot is None:
            return frozenset()
        return self.snapshot.directory.revoked_serial_numbers()

    def expected_entry(self) -> ExpectedEntry:
        return ExpectedEntry(
            sign_kid=self.keys.sign_record().kid,
            enc_kid=self.keys.enc_record().kid,
            endpoint=self.settings.endpoint,
            kind=self.settings.kind,
            display_name=self.settings.display_name,
        )

    def current(self) -> DirectorySnapshot:
        if self.snapshot is None:
            raise SemopsError(E.UNAVAILABLE, "the scheme directory is not loaded yet")
        return self.snapshot

    def install(self, snapshot: DirectorySnapshot) -> None:
        previous = self.snapshot
        if previous is not None and snapshot.directory.serial < previous.directory.serial:
            return  # an older directory never replaces a newer one
        self.snapshot = snapshot
        listed = snapshot.ring
        self._ring = listed.with_records(record for record in self._own if record.kid not in listed)
        if previous is None or previous.directory.serial != snapshot.directory.serial:
            log.info("directory_installed", serial=snapshot.directory.serial)
            self._check_own_entry(snapshot.directory)

    def _check_own_entry(self, directory: Directory) -> None:
        """Alarm when our entry is not what we registered (module docstring)."""
        processor_id = self.settings.processor_id
        try:
            entry = directory.entry(processor_id)
        except SemopsError:
            entry = None  # not registered yet, or forgotten: the background work rejoins
        differences = entry_differences(entry, self.expected_entry()) if entry else ()
        if differences:
            published = [key.kid for key in entry.keys] if entry is not None else []
            for difference in differences:
                log.error(
                    "directory_entry_mismatch",
                    processor=processor_id,
                    kind=difference,
                    kid=",".join(published),
                    serial=directory.serial,
                )
        elif self.entry_differences:
            log.warning("directory_entry_restored", processor=processor_id)
        self.entry_differences = differences
        if self.metrics is not None:
            self.metrics.directory_entry_mismatch.set(len(differences))

    def is_listed(self) -> bool:
        """Whether the current directory lists this processor (it registered)."""
        if self.snapshot is None:
            return False
        ids = {entry.participant_id for entry in self.snapshot.directory.entries}
        return self.settings.processor_id in ids

    def _parse(self, reply: Reply, *, accepted: tuple[int, ...] = (200,)) -> DirectorySnapshot:
        if reply.status >= 400:
            raise error_from_problem(reply.status, reply.content_type, reply.body)
        if reply.status not in accepted or len(reply.body) > DIRECTORY_MAX_BYTES * 2:
            raise SemopsError(E.DIRECTORY_INVALID, f"the router answered {reply.status}")
        try:
            document = json.loads(reply.body)
        except ValueError as error:
            raise SemopsError(E.DIRECTORY_INVALID, "the directory is not JSON") from error
        return verify_directory_document(document, self.keys, self.clock.now())

    async def refresh(self) -> None:
        """Fetch, verify and install the directory; errors propagate. The router refusing
        our own certificate as revoked (a revoked serial, or the certificate of a revoked
        key) is the loudest difference there is: the alarm goes up, as for the entry."""
        reply = await self.link.call("GET", "/v1/directory", timeout_s=ROUTER_QUERY_TIMEOUT_S)
        try:
            snapshot = self._parse(reply)
        except SemopsError as error:
            if error.spec is E.CERTIFICATE_REVOKED:
                self._alarm(("certificate_revoked",))
            raise
        self.install(snapshot)

    def _alarm(self, differences: tuple[str, ...]) -> None:
        processor_id = self.settings.processor_id
        for difference in differences:
            log.error("directory_entry_mismatch", processor=processor_id, kind=difference)
        self.entry_differences = differences
        if self.metrics is not None:
            self.metrics.directory_entry_mismatch.set(len(differences))

    async def refresh_if_allowed(self) -> bool:
        """Refresh unless one happened moments ago; False if nothing was fetched."""
        if time.monotonic() - self._last_on_demand_monotonic < DIRECTORY_REFRESH_MIN_INTERVAL_S:
            return False
        self._last_on_demand_monotonic = time.monotonic()
        try:
            await self.refresh()
        except SemopsError as error:
            log.warning("directory_refresh_failed", code=error.code)
            return False
        return True

    def registration(self) -> str:
        now = self.clock.now()
        keys, settings = self.keys, self.settings
        message = ParticipantRegistration(
            participant_id=settings.processor_id,
            kind=settings.kind,
            display_name=settings.display_name,
            endpoint=settings.endpoint,
            sign_certificate=keys.pem(keys.sign_certificate),
            enc_certificate=keys.pem(keys.enc_certificate),
            created_at=now,
            expires_at=now + AUTH_TTL_MAX_S,
        )
        # With a previous key (a rotation), it endorses the registration the new key signs.
        return sign_registration(message, keys.sign_key, current_key=self.previous_sign_key)

    async def register(self) -> None:
        """Join the scheme (or update our entry); installs the directory it answers.

        The router answers 202 when it holds the change for its operator: the directory it
        sends still shows our old entry, and the entry check raises the alarm."""
        reply = await self.link.call(
            "POST", "/v1/participants", jose=self.registration(), timeout_s=ROUTER_QUERY_TIMEOUT_S
        )
        self.install(self._parse(reply, accepted=(200, 202)))
        if reply.status == 202:
            log.error("registration_held", processor=self.settings.processor_id)
        else:
            log.info("registered", processor=self.settings.processor_id)

    async def open(
        self,
        token: str,
        expected: type[M],
        *,
        expected_signer: str | None = None,
        check_freshness: bool = True,
    ) -> Signed[M]:
        """Verify a message signed by a scheme participant; one refresh on an unknown kid."""
        try:
            return open_signed(
                token,
                expected,
                self.ring,
                self.clock.now(),
                expected_signer=expected_signer,
                check_freshness=check_freshness,
            )
        except SemopsError as error:
            if error.spec is not E.KEY_UNKNOWN or not await self.refresh_if_allowed():
                raise
        return open_signed(
            token,
            expected,
            self.ring,
            self.clock.now(),
            expected_signer=expected_signer,
            check_freshness=check_freshness,
        )

    async def open_from_router(
        self, token: str, expected: type[M], *, check_freshness: bool = True
    ) -> M:
        router_id = self.current().router_id
        signed = await self.open(
            token, expected, expected_signer=router_id, check_freshness=check_freshness
        )
        return signed.message

    async def active_entry(self, participant_id: str) -> Any:
        """The directory entry of an active participant; one refresh if it is unknown."""
        try:
            return self.current().directory.active_entry(participant_id)
        except SemopsError as error:
            if error.spec is not E.PROCESSOR_UNKNOWN or not await self.refresh_if_allowed():
                raise
        return self.current().directory.active_entry(participant_id)
