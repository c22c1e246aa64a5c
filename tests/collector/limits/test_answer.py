"""The check's answer written out directly is the JSON a ``JSONResponse`` of it would send."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from tollmeter.collector.limits import CheckResult, LimitStatus
from tollmeter.collector.limits._answer import check_answer_bytes

texts = st.text(max_size=12)
names = st.sampled_from(["tpm", "daily", 'q"uote', "ünï", "a\\b", "tab\there"]) | texts
numbers = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**18), 10**18)
    | st.sampled_from([0.0, -0.0, 1e15, 1e16, 5e-324, 1.5, 1000])
)
instants = st.floats(0.0, 4_000_000_000.0)

statuses = st.builds(
    LimitStatus,
    name=names,
    key=st.dictionaries(st.sampled_from(["tenant", "project", "org"]), texts, max_size=3),
    measure=st.sampled_from(["tokens", "requests", "cost"]),
    action=st.sampled_from(["block", "throttle", "alert", "downgrade"]),
    limit=numbers,
    remaining=numbers,
    reset_at=instants,
    allowed=st.booleans(),
)
results = st.builds(
    CheckResult,
    allowed=st.booleans(),
    action=st.sampled_from(["allow", "block", "throttle", "alert", "downgrade"]),
    reservation_id=st.none() | texts,
    retry_after_s=st.none() | numbers,
    downgrade_model=st.none() | texts,
    denied_by=st.none() | names,
    limits=st.lists(statuses, max_size=5).map(tuple),
    reason=st.none() | texts,
)


@given(results)
def test_the_answer_is_what_a_json_response_sends(result: CheckResult) -> None:
    assert check_answer_bytes(result) == JSONResponse(result.to_json()).body


def test_limits_equal_as_numbers_but_written_apart_stay_apart() -> None:
    def answer(limit: float) -> CheckResult:
        status = LimitStatus("n", {"tenant": "t"}, "tokens", "block", limit, 1, 0.0, True)
        return CheckResult(True, "allow", limits=(status,))

    for limit in (1, 1.0, 1, 0.0, -0.0, 0, 0.0):
        assert check_answer_bytes(answer(limit)) == JSONResponse(answer(limit).to_json()).body


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_numbers_json_cannot_carry_are_refused_as_before(value: float) -> None:
    result = CheckResult(False, "throttle", retry_after_s=value)
    with pytest.raises(ValueError, match="not JSON compliant"):
        JSONResponse(result.to_json())
    with pytest.raises(ValueError, match="not JSON compliant"):
        check_answer_bytes(result)
