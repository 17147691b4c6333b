"""schemathesis against the OpenAPI document of every port of every service.

Two passes per port, both with a fixed seed (hypothesis `derandomize`) so a CI failure
replays locally, and bounded by `max_examples` per operation:

- Rejected input changes no state: schemathesis' negative mode (bodies, path and query
  values that break the document's schema) on a quiet network, with the real credential
  of each route family, so input reaches as deep as validation lets it. Every table of
  the service's database is digested before and after each case; every case must be
  answered 4xx problem+json with a registered code, and no row may move.
- Valid-looking input: the positive mode. No answer is a 5xx, every 4xx is problem+json
  whose `code` is registered with that status, every 2xx status is documented.

JOSE bodies (`application/jose`) are not described in the documents, so fuzzing stops at
the signature checks there; tests/attack and tests/protocol cover the signed messages.
The positive pass runs last: it creates customers, merchants and requests.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from .support import (
    FuzzNetwork,
    Service,
    changed_tables,
    describe,
    problem_json_with_registered_code,
    success_status_documented,
)

pytestmark = pytest.mark.timeout(600)

SERVICES: Final = (
    "processor-public",
    "processor-scheme",
    "router-scheme",
    "router-operator",
    "merchant",
)
# Cases per operation and pass (fewer where hypothesis exhausts the input space). The five
# ports have 55 operations: per backend about 400 negative cases, each between two digests
# of the service's database, and 1,000 positive ones; about 20 s per backend.
NEGATIVE_EXAMPLES: Final = 15
POSITIVE_EXAMPLES: Final = 25
CHECKS: Final = [not_a_server_error, problem_json_with_registered_code, success_status_documented]


@dataclass
class Run:
    """What one pass saw: status counts and every failure, described."""

    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    operations: int = 0
    unnegatable: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        if len(self.failures) < 30:
            self.failures.append(text)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def _send(service: Service, case: Any, run: Run) -> Any:
    service.authorise(case)
    # The transport sets `verify` and `cert` per request, over the session's own.
    response = case.call(
        base_url=service.base_url,
        session=service.session,
        verify=service.session.verify,
        cert=service.session.cert,
    )
    run.statuses[response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        run.fail(f"{describe(case, response)}: {group.exceptions[0]}")
    return response


def _takes_input(operation: Any) -> bool:
    """Operations that take nothing (no parameters, no body) have no negative form."""
    return bool(operation.definition.raw.get("parameters") or operation.body)


def fuzz(service: Service, mode: GenerationMode, examples: int, *, digests: bool) -> Run:
    run = Run()
    for result in service.schema().get_all_operations():
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and not _takes_input(operation):
            continue
        strategy = operation.as_strategy(generation_mode=mode)

        @_settings(examples)
        @given(case=strategy)
        def one(case: Any) -> None:
            before = service.database.take() if digests else None
            response = _send(service, case, run)
            if before is None:
                return
            if not 400 <= response.status_code < 500:
                run.fail(f"negative input not refused: {describe(case, response)}")
                return
            moved = changed_tables(before, service.database.take())
            if moved:
                run.fail(f"refused input changed {moved}: {describe(case, response)}")

        try:
            one()
        except Unsatisfiable:
            # Nothing in the operation can break its schema (say, one optional header).
            run.unnegatable.append(operation.label)
        else:
            run.operations += 1
    return run


# The processor's scheme port takes only JOSE bodies, which the document does not describe:
# nothing there has a negative form (test_jose_bodies.py feeds it junk tokens instead).
@pytest.mark.parametrize("name", [name for name in SERVICES if name != "processor-scheme"])
def test_rejected_input_changes_no_state(fuzz_net: FuzzNetwork, name: str) -> None:
    fuzz_net.quiesce()
    service = fuzz_net.services[name]
    run = fuzz(service, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, digests=True)
    assert not run.failures, "\n".join(run.failures)
    assert run.operations >= 1, run.unnegatable
    assert sum(run.statuses.values()) >= run.operations, run.statuses
    assert all(400 <= status < 500 for status in run.statuses), run.statuses


@pytest.mark.parametrize("name", SERVICES)
def test_no_server_error_and_problems_are_registered(fuzz_net: FuzzNetwork, name: str) -> None:
    service = fuzz_net.services[name]
    run = fuzz(service, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, digests=False)
    assert not run.failures, "\n".join(run.failures)
    assert run.operations == len(list(service.schema().get_all_operations()))
    assert sum(run.statuses.values()) >= run.operations, run.statuses
