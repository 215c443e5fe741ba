"""Redaction fixtures: what is masked before a body reaches the prompt log, and what is not."""

from __future__ import annotations

import pytest

from aigateway.config.model import Redaction
from aigateway.redact import SECRETS, Redactor

MASKED = [
    ("mail jane.doe+x@example.co.uk today", "mail [REDACTED:email] today"),
    ("call +1 415 555 0100", "call [REDACTED:phone]"),
    ("or (415) 555-0100, or 415.555.0100", "or [REDACTED:phone], or [REDACTED:phone]"),
    ("uk: +442071838750", "uk: [REDACTED:phone]"),
    ("card 4111 1111 1111 1111 exp 12/29", "card [REDACTED:card] exp 12/29"),
    ("amex 378282246310005", "amex [REDACTED:card]"),
    ("key sk-proj-abcdefghijklmnop1234", "key [REDACTED:secret]"),
    ("claude sk-ant-api03-abcdefghijklmnopqrst", "claude [REDACTED:secret]"),
    ("gateway aig-0123456789abcdefghij", "gateway [REDACTED:secret]"),
    ("google AIzaSyA-1234567890abcdefghijklmnopqrstu", "google [REDACTED:secret]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED:secret]"),
    ("gh ghp_" + "a" * 36, "gh [REDACTED:secret]"),
    ("slack xoxb-1234567890-abcdef", "slack [REDACTED:secret]"),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        "jwt [REDACTED:secret]",
    ),
    ("Authorization: Bearer abcdefghijklmnopqrstuvwx", "Authorization: [REDACTED:secret]"),
    ('{"password": "hunter2hunter2"}', '{"[REDACTED:secret]"}'),
    ("api_key=abcd1234efgh5678", "[REDACTED:secret]"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
        "[REDACTED:secret]",
    ),
]
KEPT = [
    "version 1.2.3 has 42 items, total 1000000",
    "order 1234567890123 shipped 2026-11-23 12:30:45",  # fails Luhn; a date and a time
    "card 4111 1111 1111 1112 is not a card number",  # fails Luhn
    "the token count is high and the secret is patience",
    "call me at ext. 4412",
]


@pytest.mark.parametrize(("text", "expected"), MASKED)
def test_masked(text: str, expected: str) -> None:
    assert Redactor(Redaction())(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_kept(text: str) -> None:
    assert Redactor(Redaction())(text) == text


def test_each_kind_can_be_switched_off_and_patterns_added() -> None:
    config = Redaction(emails=False, patterns=[r"ACME-\d{6}"])
    redact = Redactor(config)
    assert redact("jane@example.com ACME-123456") == "jane@example.com [REDACTED]"


def test_json_values_are_redacted_not_keys() -> None:
    body = {"messages": [{"role": "user", "content": "mail jane@example.com"}], "n": 1}
    out = Redactor(Redaction()).json(body)
    assert out == {"messages": [{"role": "user", "content": "mail [REDACTED:email]"}], "n": 1}


def test_case_sensitive_secret_patterns_come_first() -> None:
    """The Redactor applies them in two runs, case-sensitive ones first: that is
    SECRETS's order only while no pattern that ignores case comes before one that
    does not."""
    folded = [ignores_case for _, ignores_case, _ in SECRETS]
    assert folded == sorted(folded)
