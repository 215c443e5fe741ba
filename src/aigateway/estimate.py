"""A rough, offline estimate of a prompt's tokens, for routing decisions only.

Characters / 4 plus a few tokens per message: close for English prose, low for
code and unusual scripts. It decides only whether a prompt obviously does not
fit a target's context window (a target that is wrong about it answers with a
context-length error, which falls through to a larger target anyway). It is
never used for money.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PER_MESSAGE = 4
CHARS_PER_TOKEN = 4


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    chars = 0
    messages = body.get("messages")
    count = 0
    if isinstance(messages, list):
        for message in messages:
            count += 1
            if isinstance(message, dict):
                chars += _chars(message.get("content"))
                chars += _chars(message.get("tool_calls"))
    chars += _chars(body.get("tools"))
    return chars // CHARS_PER_TOKEN + PER_MESSAGE * count + 3


def _chars(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "input_audio", "image"):
            return 85 * CHARS_PER_TOKEN  # a low-detail image's tokens, roughly
        return sum(_chars(v) for v in value.values())
    return len(str(value))
