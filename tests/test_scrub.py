from __future__ import annotations

import pytest

from aigateway.scrub import REDACTED, scrub


@pytest.mark.parametrize(
    ("text", "secrets", "leak"),
    [
        ("Incorrect API key provided: sk-proj-abcdefghijklmnop", (), "abcdefghijkl"),
        ("key=AIzaSyA1234567890abcdefghijklmn", (), "AIzaSyA12345"),
        ("Authorization: Bearer abc.def.ghijklmnop", (), "ghijklmnop"),
        ("custom secret hunter2-xyz in text", ("hunter2-xyz",), "hunter2"),
        ("aig-0123456789abcdef leaked", (), "0123456789"),
    ],
)
def test_scrub_removes_secrets(text: str, secrets: tuple[str, ...], leak: str) -> None:
    out = scrub(text, secrets)
    assert leak not in out
    assert REDACTED in out


def test_scrub_keeps_ordinary_text_and_bounds_length() -> None:
    assert scrub("The model 'gpt-4o' does not exist.") == "The model 'gpt-4o' does not exist."
    assert len(scrub("x" * 10_000)) <= 2001
