"""Retry decisions, pure: which failures a policy retries and how long to wait.

Never retried, whatever the policy says: the caller's own mistakes (400, 404,
413, 422) and a provider refusing our credentials (401, 403); those go to the
next target or back to the caller.
"""

from __future__ import annotations

import random

from aigateway.config.model import RetryPolicy
from aigateway.errors import (
    GatewayError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)

#: the longest Retry-After honoured, whatever the policy's max_backoff_s
MAX_RETRY_AFTER_S = 60.0


def condition(exc: BaseException) -> int | str | None:
    """The ``retry_on`` entry a failure matches, or None if it is never retried."""
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamConnectError):
        return "connect"
    if isinstance(exc, UpstreamProtocolError):
        return 502  # the provider answered garbage or broke before the first byte
    if isinstance(exc, UpstreamStatusError):
        return exc.upstream_status
    return None


def retryable(policy: RetryPolicy, exc: BaseException) -> bool:
    found = condition(exc)
    return found is not None and found in policy.retry_on


def backoff_s(
    policy: RetryPolicy, attempt: int, exc: BaseException | None, rng: random.Random
) -> float:
    """The wait before attempt ``attempt + 1`` (attempts count from 1).

    The provider's ``retry-after-ms`` / ``retry-after`` (seconds) wins when present,
    capped at ``max_backoff_s`` (and 60 s); otherwise exponential backoff from
    ``initial_backoff_s`` with "equal jitter" (between half and all of the step).
    """
    if isinstance(exc, GatewayError):
        hinted = _retry_after(exc.headers)
        if hinted is not None:
            return min(hinted, policy.max_backoff_s, MAX_RETRY_AFTER_S)
    step = min(policy.max_backoff_s, policy.initial_backoff_s * 2.0 ** (attempt - 1))
    return step / 2 + rng.uniform(0, step / 2)


def _retry_after(headers: dict[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # an HTTP date: fall back to the policy's backoff
        if seconds >= 0:
            return seconds
    return None


_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_CONTEXT_PHRASES = (
    "context length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
)
_FILTER_CODES = frozenset(
    {"content_filter", "content_policy_violation", "responsible_ai_policy_violation"}
)
_FILTER_PHRASES = ("content management policy", "content policy", "safety system")


def is_context_length(exc: BaseException) -> bool:
    """The provider says the prompt does not fit its context window."""
    if not isinstance(exc, UpstreamStatusError) or exc.upstream_status not in (400, 413):
        return False
    message = exc.message.lower()
    return exc.code in _CONTEXT_CODES or any(p in message for p in _CONTEXT_PHRASES)


def is_content_filter(exc: BaseException) -> bool:
    """The provider refused the request on content policy."""
    if not isinstance(exc, UpstreamStatusError) or exc.upstream_status not in (400, 403):
        return False
    message = exc.message.lower()
    return exc.code in _FILTER_CODES or any(p in message for p in _FILTER_PHRASES)
