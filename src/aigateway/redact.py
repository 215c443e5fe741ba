"""Masking personal data and secrets in text before it is written to the prompt log.

Each match becomes ``[REDACTED:<kind>]``. Card numbers must pass the Luhn check
(so order ids and timestamps survive); phone numbers need a
leading ``+`` (international) or the 3-3-4 pattern of North America, so plain
integers, dates and times in prompts are left alone.
"""

from __future__ import annotations

import re
from typing import Any

from aigateway.config.model import Redaction

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)|\d{1,4})(?:[ .-]?\d{2,4}){2,4}(?![\w:])"  # +cc ...
    r"|(?<![\w(])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w:])"  # (415) 555-0100
)
#: (literal that must appear, lower-cased when the pattern ignores case; pattern).
#: The literal check is C-speed and skips almost every pattern on ordinary text.
SECRETS: tuple[tuple[str, bool, re.Pattern[str]], ...] = (
    (
        "PRIVATE KEY-----",
        False,
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    ),
    ("sk-", False, re.compile(r"\bsk-(?:ant-|proj-|live-|test-)?[A-Za-z0-9_-]{16,}")),
    ("aig-", False, re.compile(r"\baig-[A-Za-z0-9_-]{16,}")),  # this gateway's own keys
    ("AIza", False, re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),  # Google
    ("AKIA", False, re.compile(r"\bAKIA[0-9A-Z]{16}\b")),  # AWS access key id
    ("ASIA", False, re.compile(r"\bASIA[0-9A-Z]{16}\b")),
    ("_", False, re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}")),  # GitHub
    ("xox", False, re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),  # Slack
    ("eyJ", False, re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("bearer", True, re.compile(r"(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{16,}")),
    *(
        (
            word,
            True,
            re.compile(rf"(?i:\b{word}\w*)[\"']?\s*[:=]\s*[\"']?[^\s\"',;]{{8,}}"),
        )
        for word in ("api_key", "api-key", "apikey", "secret", "password", "passwd", "token")
    ),
)
#: (literal, pattern) of the patterns above: the case-sensitive ones, then those
#: that ignore case (searched for in the lower-cased text). Checking them in this
#: order is SECRETS's order while every case-sensitive one comes first there
#: (tests/test_redact.py).
EXACT_SECRETS = tuple((literal, pattern) for literal, folded, pattern in SECRETS if not folded)
FOLDED_SECRETS = tuple((literal, pattern) for literal, folded, pattern in SECRETS if folded)
_NO_DIGITS = str.maketrans("", "", "0123456789")
#: shorter strings cannot hold anything the patterns look for
_MIN_CHARS = 6


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[REDACTED:card]" if luhn(digits) else match.group()


class Redactor:
    def __init__(self, config: Redaction) -> None:
        self._exact = EXACT_SECRETS if config.secrets else ()
        self._folded = FOLDED_SECRETS if config.secrets else ()
        self._emails = config.emails
        self._cards = config.card_numbers
        self._phones = config.phone_numbers
        self._custom = [re.compile(p) for p in config.patterns]

    def __call__(self, text: str) -> str:
        # secrets first: a key may contain what looks like a phone number
        for literal, pattern in self._exact:
            if literal in text:
                text = pattern.sub("[REDACTED:secret]", text)
        if self._folded:
            lower = text.lower()
            for literal, pattern in self._folded:
                if literal in lower:
                    text = pattern.sub("[REDACTED:secret]", text)
        if self._emails and "@" in text:
            text = EMAIL.sub("[REDACTED:email]", text)
        if (self._cards or self._phones) and len(text) - len(text.translate(_NO_DIGITS)) >= 10:
            if self._cards:
                text = CARD.sub(_card, text)
            if self._phones:
                text = PHONE.sub("[REDACTED:phone]", text)
        for pattern in self._custom:
            text = pattern.sub("[REDACTED]", text)
        return text

    def json(self, value: Any) -> Any:
        """A copy of parsed JSON with its string values redacted (keys and short
        values such as ids, roles and numbers are left as they are)."""
        if isinstance(value, str):
            return self(value) if len(value) >= _MIN_CHARS else value
        if isinstance(value, dict):
            return {k: self.json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v) for v in value]
        return value
