"""Token counts of one exchange, as every provider's usage reads into them.

Compiled (setup.py): every answer and stream reads one, and prices and limits
read its buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one exchange, OpenAI semantics.

    ``cached_tokens`` (cache reads) and ``cache_write_tokens`` (Anthropic cache
    creation) are parts of ``prompt_tokens``; ``reasoning_tokens`` is part of
    ``completion_tokens``. The disjoint buckets prices apply to are
    ``uncached_input_tokens``, ``cached_tokens``, ``cache_write_tokens`` and
    ``completion_tokens`` (reasoning is billed as output).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def uncached_input_tokens(self) -> int:
        return max(0, self.prompt_tokens - self.cached_tokens - self.cache_write_tokens)

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        """Read an OpenAI ``usage`` object; None when absent or malformed."""
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens", 0)
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        details = usage.get("prompt_tokens_details") or {}
        out_details = usage.get("completion_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        written = details.get("cache_write_tokens") if isinstance(details, dict) else None
        reasoning = out_details.get("reasoning_tokens") if isinstance(out_details, dict) else None
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached if isinstance(cached, int) else 0,
            reasoning_tokens=reasoning if isinstance(reasoning, int) else 0,
            cache_write_tokens=written if isinstance(written, int) else 0,
        )

    @classmethod
    def from_anthropic(cls, usage: Any) -> Usage | None:
        """Anthropic ``usage``: ``input_tokens`` is the uncached part only; cache
        creation and reads come on top; thinking is part of ``output_tokens``."""
        if not isinstance(usage, dict) or not isinstance(usage.get("output_tokens"), int):
            return None
        uncached = _int(usage.get("input_tokens"))
        written = _int(usage.get("cache_creation_input_tokens"))
        read = _int(usage.get("cache_read_input_tokens"))
        details = usage.get("output_tokens_details")
        thinking = _int(details.get("thinking_tokens")) if isinstance(details, dict) else 0
        return cls(
            prompt_tokens=uncached + written + read,
            completion_tokens=usage["output_tokens"],
            cached_tokens=read,
            reasoning_tokens=thinking,
            cache_write_tokens=written,
        )

    @classmethod
    def from_gemini(cls, meta: Any) -> Usage | None:
        """Gemini ``usageMetadata``: the prompt includes cached content; thoughts are
        billed as output but reported apart from candidates (unless a model already
        counts them inside, which ``totalTokenCount`` reveals)."""
        if not isinstance(meta, dict) or not isinstance(meta.get("promptTokenCount"), int):
            return None
        prompt = meta["promptTokenCount"] + _int(meta.get("toolUsePromptTokenCount"))
        candidates = _int(meta.get("candidatesTokenCount"))
        thoughts = _int(meta.get("thoughtsTokenCount"))
        total = meta.get("totalTokenCount")
        inclusive = isinstance(total, int) and thoughts and total == prompt + candidates
        return cls(
            prompt_tokens=prompt,
            completion_tokens=candidates if inclusive else candidates + thoughts,
            cached_tokens=_int(meta.get("cachedContentTokenCount")),
            reasoning_tokens=thoughts,
        )

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": (
                {"cached_tokens": self.cached_tokens, "cache_write_tokens": self.cache_write_tokens}
                if self.cache_write_tokens
                else {"cached_tokens": self.cached_tokens}
            ),
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
