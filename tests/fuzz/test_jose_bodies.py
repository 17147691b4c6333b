"""Signed-message routes fed with junk: bytes, text, and tokens shaped like JWS and JWE.

The OpenAPI documents do not describe `application/jose` bodies, so schemathesis sends
nothing useful to these routes. Here hypothesis makes bodies that get past the first
look (three or five base64url parts, a header naming ES256 and a kid, a JSON payload)
and fail later: at the header, the key lookup or the signature. Each must be refused 4xx
with a registered problem code, and no row of the service's database may move.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .support import FuzzNetwork, changed_tables, problem_of

pytestmark = pytest.mark.timeout(600)

ROUTES: Final = (
    ("processor-public", "/v1/wallet/enrol"),
    ("processor-public", "/v1/wallet/orders"),
    ("processor-scheme", "/v1/scheme/transfers"),
    ("processor-scheme", "/v1/scheme/status"),
    ("processor-scheme", "/v1/scheme/refunds"),
    ("router-scheme", "/v1/participants"),
    ("router-scheme", "/v1/transfers"),
    ("router-scheme", "/v1/refunds"),
    ("merchant", "/v1/notices"),
)
EXAMPLES: Final = 40


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["ES256", "EdDSA", "none", "HS256", "", "ECDH-ES+A256KW"])},
    optional={
        "kid": st.sampled_from(["bank-a:AAAAAAAAAAAA", "router:x", "mno-b:", ""])
        | st.text(max_size=70),
        "typ": st.text(max_size=12),
        "enc": st.sampled_from(["A256GCM", "A128CBC-HS256"]),
        "crit": st.lists(st.text(max_size=6), max_size=3),
    },
)


def _compact(header: dict[str, Any], payload: Any, signature: bytes) -> bytes:
    parts = [json.dumps(header).encode(), json.dumps(payload).encode(), signature]
    return ".".join(_b64(part) for part in parts).encode()


def _jwe_shape(header: dict[str, Any], parts: list[bytes]) -> bytes:
    return ".".join([_b64(json.dumps(header).encode()), *(_b64(part) for part in parts)]).encode()


BODIES: Final = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.builds(_compact, _headers, _json_values, st.binary(min_size=0, max_size=80)),
    st.builds(_jwe_shape, _headers, st.lists(st.binary(max_size=40), min_size=4, max_size=4)),
    st.lists(st.text("AZaz09-_", max_size=40), min_size=1, max_size=7).map(
        lambda parts: ".".join(parts).encode()
    ),
)


@pytest.mark.parametrize(("name", "path"), ROUTES)
def test_junk_tokens_are_refused_and_change_nothing(
    fuzz_net: FuzzNetwork, name: str, path: str
) -> None:
    fuzz_net.quiesce()
    service = fuzz_net.services[name]
    failures: list[str] = []
    statuses: set[int] = set()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(body=BODIES)
    def one(body: bytes) -> None:
        before = service.database.take()
        response = service.post(path, body, "application/jose")
        statuses.add(response.status_code)
        try:
            assert 400 <= response.status_code < 500, "not refused as bad input"
            problem_of(response)
            moved = changed_tables(before, service.database.take())
            assert not moved, f"refused input changed {moved}"
        except (AssertionError, KeyError, ValueError) as error:
            failures.append(
                f"{body[:120]!r} -> {response.status_code} {response.text[:200]}: {error}"
            )

    one()
    assert not failures, "\n".join(failures[:20])
    assert statuses, "no case was sent"
