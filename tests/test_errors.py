"""One table of Graph error codes (``wa_agent.exceptions.ERROR_CODES``) decides the exception
class, ``retryable`` and the Sender's in-call retries: the rule for each code of
reference/cloud_api.md §10 is pinned here, and the two views can no longer disagree.
"""

from __future__ import annotations

import pytest

from wa_agent.agents import AgentRequest
from wa_agent.exceptions import (
    ERROR_CODES,
    AccountError,
    AuthenticationError,
    InvalidRequestError,
    MediaUploadError,
    OutsideServiceWindow,
    PermissionDeniedError,
    RateLimitError,
    RecipientError,
    RetryKind,
    ServerError,
    TemplateError,
    TransportError,
    WhatsAppAPIError,
    api_error_from_body,
    error_rule,
)
from wa_agent.sender import RetryPolicy
from wa_agent.testing.simulator import Simulator

K = RetryKind

#: (code, class, retry kind) for every code cloud_api.md §10 lists: the rule, written out.
RULES: list[tuple[int, type[WhatsAppAPIError], RetryKind]] = [
    (130429, RateLimitError, K.THROTTLE),
    (131056, RateLimitError, K.PAIR_RATE),
    (4, RateLimitError, K.LATER),  # hourly app limit: minutes, from the inbox
    (80007, RateLimitError, K.LATER),  # WABA limit: after the window
    (131048, RateLimitError, K.NEVER),  # spam limit: send less
    (131049, RateLimitError, K.NEVER),  # marketing cap: no resend for 24 h
    (131064, RateLimitError, K.NEVER),
    (131047, OutsideServiceWindow, K.NEVER),
    (131026, RecipientError, K.NEVER),
    (131050, RecipientError, K.NEVER),
    (130472, RecipientError, K.NEVER),
    (137000, RecipientError, K.NEVER),
    (131021, RecipientError, K.NEVER),
    (131052, MediaUploadError, K.NEVER),
    (131053, MediaUploadError, K.NEVER),
    (131000, ServerError, K.TRANSIENT),
    (131016, ServerError, K.TRANSIENT),
    (1, ServerError, K.TRANSIENT),
    (2, ServerError, K.TRANSIENT),
    (131057, ServerError, K.LATER),  # maintenance / throughput upgrade: after ~60 s
    (190, AuthenticationError, K.NEVER),
    (0, AuthenticationError, K.NEVER),
    (10, PermissionDeniedError, K.NEVER),
    (3, PermissionDeniedError, K.NEVER),
    (131005, PermissionDeniedError, K.NEVER),
    (200, PermissionDeniedError, K.NEVER),
    (299, PermissionDeniedError, K.NEVER),
    (100, InvalidRequestError, K.NEVER),
    (131008, InvalidRequestError, K.NEVER),
    (131009, InvalidRequestError, K.NEVER),
    (131051, InvalidRequestError, K.NEVER),
    (33, InvalidRequestError, K.NEVER),
    (132000, TemplateError, K.NEVER),
    (132016, TemplateError, K.NEVER),
    (132068, TemplateError, K.NEVER),
    (368, AccountError, K.NEVER),
    (131031, AccountError, K.NEVER),
    (130497, AccountError, K.NEVER),
    (131042, AccountError, K.NEVER),
    (131037, AccountError, K.NEVER),
    (999999, WhatsAppAPIError, K.NEVER),  # a code we do not know
]

#: (HTTP status of an answer without a Graph error, class, retry kind).
STATUS_RULES: list[tuple[int, type[WhatsAppAPIError], RetryKind]] = [
    (429, RateLimitError, K.THROTTLE),
    (500, ServerError, K.TRANSIENT),
    (502, ServerError, K.TRANSIENT),
    (503, ServerError, K.TRANSIENT),
    (401, AuthenticationError, K.NEVER),
    (400, WhatsAppAPIError, K.NEVER),
    (404, WhatsAppAPIError, K.NEVER),
]

IN_CALL = {K.THROTTLE, K.PAIR_RATE, K.TRANSIENT}


def _graph(code: int, status: int = 400) -> WhatsAppAPIError:
    body = {"error": {"message": f"error {code}", "code": code, "fbtrace_id": "T"}}
    return api_error_from_body(body, status)


@pytest.mark.parametrize(("code", "cls", "kind"), RULES)
def test_each_code_has_its_class_and_retry_rule(
    code: int, cls: type[WhatsAppAPIError], kind: RetryKind
) -> None:
    """A Graph error with this code is raised as ``cls``; it is retryable unless its kind is
    NEVER; the RetryPolicy retries it within the call only for throttle, pair-rate and
    transient errors (LATER waits minutes: the interface retries it from its inbox)."""
    error = _graph(code)
    assert type(error) is cls
    assert error.retry_kind is kind
    assert error_rule(code).retry is kind
    assert error.retryable is (kind is not K.NEVER)
    in_call = RetryPolicy().delay(error, 1)
    assert (in_call is not None) is (kind in IN_CALL)


@pytest.mark.parametrize(("status", "cls", "kind"), STATUS_RULES)
def test_answers_without_a_graph_error_are_keyed_on_the_status(
    status: int, cls: type[WhatsAppAPIError], kind: RetryKind
) -> None:
    """A proxy's error page (no Graph body) gets its class and rule from the HTTP status."""
    error = api_error_from_body("<html>bad gateway</html>", status)
    assert type(error) is cls
    assert (error.retry_kind, error.retryable) == (kind, kind is not K.NEVER)
    assert (RetryPolicy().delay(error, 1) is not None) is (kind in IN_CALL)


def test_the_table_covers_the_reference_and_nothing_contradicts_it() -> None:
    """Every code of ERROR_CODES is pinned above with the same rule (a new code cannot be
    added without deciding its rule here)."""
    pinned = {code: (cls, kind) for code, cls, kind in RULES}
    for code, rule in ERROR_CODES.items():
        assert pinned.get(code) == (rule.error, rule.retry), code


@pytest.mark.parametrize("cls", [WhatsAppAPIError, RateLimitError])
def test_an_error_built_by_hand_agrees_with_the_policy(cls: type[WhatsAppAPIError]) -> None:
    """An error constructed directly (as an agent or a test might) derives ``retryable`` from
    the same table as the policy: a bare HTTP 429 is retried in the call, so it is
    retryable (it used to say ``retryable=False`` while the policy retried it)."""
    error = cls("throttled", http_status=429)
    assert RetryPolicy().delay(error, 1) is not None
    assert error.retryable is True
    assert error.retry_kind is K.THROTTLE
    assert cls("x", code=131057).retryable is True
    assert cls("x", code=131057).retry_kind is K.LATER


def test_transport_errors_follow_maybe_delivered() -> None:
    """A request that never left is transient (retryable); one that may have reached Meta
    is never resent."""
    assert TransportError("x", maybe_delivered=False).retry_kind is K.TRANSIENT
    assert TransportError("x", maybe_delivered=False).retryable
    never = TransportError("x", maybe_delivered=True)
    assert (never.retry_kind, never.retryable) == (K.NEVER, False)


@pytest.mark.parametrize("code", [4, 80007, 131057])
async def test_later_codes_are_retried_from_the_inbox(code: int) -> None:
    """A reply refused with a 'later' code (4, 80007, 131057) is not retried within the
    call, but kept in the inbox and sent again after the interface's backoff: the user gets
    exactly one reply."""

    async def agent(request: AgentRequest) -> str:
        return f"re: {request.text}"

    async with Simulator(agent, statuses=False, sweep_interval=0.05) as sim:
        sim.emulator.fail_next(1, code)
        await sim.user("15551230001").send_text("hello")
        await sim.emulator.wait_for_messages(1, timeout=10)
        await sim.settle()
        assert sim.emulator.texts_to("15551230001") == ["re: hello"]
        sends = [c for c in sim.emulator.calls if c.endpoint == "messages"]
        assert [c.status for c in sends] == [503 if code == 131057 else 429, 200]
        assert await sim.interface.store.pending(sim.interface.name) == []
