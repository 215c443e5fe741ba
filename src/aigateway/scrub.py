"""Remove secrets from text that may reach a caller, a log line or a metric."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Token shapes of common providers; matched anywhere in text we pass on.
_TOKEN_RE = re.compile(
    r"(?:sk|rk|pk|sess|gsk|xai|aig)[-_][A-Za-z0-9_\-]{8,}"  # OpenAI, Groq, xAI, ours, ...
    r"|AIza[0-9A-Za-z_\-]{20,}"  # Google API keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"
)
REDACTED = "[redacted]"
MAX_MESSAGE_CHARS = 2000


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _TOKEN_RE.sub(REDACTED, text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + "…"
    return text
