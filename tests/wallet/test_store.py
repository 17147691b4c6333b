"""The wallet folder: private files, the enrolment, and orders moved only by the ORDER table."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from semops.core.errors import E, SemopsError
from semops.protocol import OrderEvent, OrderState
from semops.service.files import SecretFileError
from semops.wallet.core import make_device_key
from semops.wallet.store import Enrolled, OrderRecord, WalletStore

from .scheme import seed

NOW = 1_800_000_000


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _record(order_id: str = "or_" + "A" * 22, request_id: str = "rq_" + "R" * 22, at: int = NOW):
    return OrderRecord(
        order_id=order_id,
        request_id=request_id,
        request_token="a.b.c",
        token="d.e.f",
        state=OrderState.CREATED,
        payee_processor="mno-b",
        payee_id="corner-shop",
        payee_name="Corner Shop",
        amount_minor=1250,
        currency="EUR",
        reference="INV-1",
        created_at=at,
        expires_at=at + 300,
        updated_at=at,
    )


ENROLLED = Enrolled(
    processor_url="http://127.0.0.1:8500",
    processor_id="bank-a",
    account_id="alice-001",
    device_kid="device:abc",
    device_name="phone",
    customer_name="Alice",
    currency="EUR",
    enrolled_at=NOW,
)


@pytest.fixture
def store(tmp_path: Path):
    opened = WalletStore.open(tmp_path / "wallet")
    yield opened
    opened.close()


def test_the_folder_and_database_are_private(tmp_path: Path) -> None:
    store = WalletStore.open(tmp_path / "new" / "wallet")
    store.close()
    assert _mode(tmp_path / "new" / "wallet") == 0o700
    assert _mode(tmp_path / "new" / "wallet" / "wallet.db") == 0o600


def test_the_device_key_file_is_0600_and_reads_back_as_the_same_key(store: WalletStore) -> None:
    key = make_device_key(seed("store device"))
    store.save_device_key(key)
    assert _mode(store.device_key_path) == 0o600
    assert store.device_key().kid == key.kid
    assert store.has_device_key()


def test_an_existing_device_key_is_never_overwritten(store: WalletStore) -> None:
    first = make_device_key(seed("first"))
    store.save_device_key(first)
    with pytest.raises(FileExistsError):
        store.save_device_key(make_device_key(seed("second")))
    assert store.device_key().kid == first.kid


def test_a_device_key_readable_by_others_is_refused(store: WalletStore) -> None:
    store.save_device_key(make_device_key(seed("exposed")))
    store.device_key_path.chmod(0o644)
    with pytest.raises(SecretFileError):
        store.device_key()


def test_an_unenrolled_wallet_says_so(store: WalletStore) -> None:
    assert store.enrolment() is None
    with pytest.raises(SemopsError) as caught:
        store.require_enrolment()
    assert caught.value.code == E.DEVICE_UNKNOWN.code
    assert "semops wallet enroll" in caught.value.detail


def test_the_enrolment_survives_reopening(tmp_path: Path) -> None:
    store = WalletStore.open(tmp_path)
    store.save_enrolment(ENROLLED)
    store.save_device_key(make_device_key(seed("x")))
    store.close()
    again = WalletStore.open(tmp_path)
    assert again.enrolment() == ENROLLED
    assert again.require_enrolment() == ENROLLED
    again.close()


def test_the_root_is_pinned_once(store: WalletStore) -> None:
    store.pin_root("first root")
    store.pin_root("second root")
    assert store.pinned_root() == "first root"


def test_the_processor_configuration_is_kept(store: WalletStore) -> None:
    assert store.processor_config() is None
    store.save_processor_config({"processor_id": "bank-a"})
    store.save_processor_config({"processor_id": "bank-a", "serial": 2})
    assert store.processor_config() == {"processor_id": "bank-a", "serial": 2}


def test_an_order_is_durable_once_added(tmp_path: Path) -> None:
    store = WalletStore.open(tmp_path)
    store.add_order(_record())
    store.close()
    # Another connection (as after a crash and a restart) sees the order and its token.
    again = WalletStore.open(tmp_path)
    record = again.require_order("or_" + "A" * 22)
    assert (record.state, record.token) == (OrderState.CREATED, "d.e.f")
    again.close()


def test_an_order_id_is_stored_once(store: WalletStore) -> None:
    store.add_order(_record())
    with pytest.raises(Exception, match="UNIQUE"):
        store.add_order(_record())


def test_orders_move_only_along_the_order_table(store: WalletStore) -> None:
    store.add_order(_record())
    order_id = "or_" + "A" * 22
    assert store.apply(order_id, OrderEvent.SEND, NOW + 1).state is OrderState.SENT
    assert store.apply(order_id, OrderEvent.NO_ANSWER, NOW + 2).state is OrderState.PENDING
    assert store.apply(order_id, OrderEvent.SEND, NOW + 3).state is OrderState.SENT
    done = store.apply(order_id, OrderEvent.RECEIPT, NOW + 4, receipt="r.r.r")
    assert (done.state, done.receipt, done.updated_at) == (OrderState.COMPLETED, "r.r.r", NOW + 4)
    assert done.is_terminal
    with pytest.raises(SemopsError) as caught:
        store.apply(order_id, OrderEvent.SEND, NOW + 5)
    assert caught.value.code == E.STATE_TRANSITION_INVALID.code
    assert store.require_order(order_id).state is OrderState.COMPLETED


def test_a_created_order_cannot_complete_without_being_sent(store: WalletStore) -> None:
    store.add_order(_record())
    with pytest.raises(SemopsError):
        store.apply("or_" + "A" * 22, OrderEvent.RECEIPT, NOW, receipt="r.r.r")
    assert store.require_order("or_" + "A" * 22).receipt is None


def test_a_refusal_keeps_its_code_and_detail(store: WalletStore) -> None:
    store.add_order(_record())
    order_id = "or_" + "A" * 22
    store.apply(order_id, OrderEvent.SEND, NOW)
    failed = store.apply(
        order_id, OrderEvent.DECLINED, NOW, error_code="pin_invalid", error_detail="wrong"
    )
    assert (failed.state, failed.error_code, failed.error_detail) == (
        OrderState.FAILED,
        "pin_invalid",
        "wrong",
    )
    # A duplicate refusal (answer and status both said so) is allowed and changes nothing.
    again = store.apply(order_id, OrderEvent.DECLINED, NOW + 1)
    assert (again.state, again.error_code) == (OrderState.FAILED, "pin_invalid")


def test_unknown_orders_are_not_found(store: WalletStore) -> None:
    assert store.order("or_nope_nope") is None
    with pytest.raises(SemopsError) as caught:
        store.require_order("or_nope_nope")
    assert caught.value.code == E.NOT_FOUND.code
    with pytest.raises(SemopsError):
        store.apply("or_nope_nope", OrderEvent.SEND, NOW)


def test_orders_are_listed_newest_first_and_by_request(store: WalletStore) -> None:
    store.add_order(_record("or_" + "1" * 22, "rq_" + "X" * 22, NOW))
    store.add_order(_record("or_" + "2" * 22, "rq_" + "X" * 22, NOW + 5))
    store.add_order(_record("or_" + "3" * 22, "rq_" + "Y" * 22, NOW + 1))
    assert [r.order_id[3] for r in store.orders()] == ["2", "3", "1"]
    assert [r.order_id[3] for r in store.orders_for_request("rq_" + "X" * 22)] == ["2", "1"]
    assert store.orders(limit=1)[0].order_id == "or_" + "2" * 22


def test_an_order_added_for_sending_is_stored_sent_in_one_commit(tmp_path: Path) -> None:
    store = WalletStore.open(tmp_path)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    record = store.add_order(_record(), sending_at=NOW + 1)
    store._db.set_trace_callback(None)
    assert (record.state, record.updated_at) == (OrderState.SENT, NOW + 1)
    assert statements.count("COMMIT") == 1
    store.close()
    again = WalletStore.open(tmp_path)
    assert again.require_order(record.order_id).state is OrderState.SENT
    again.close()
