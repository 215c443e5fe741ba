"""OpenAI wire types the gateway inspects: request validation and usage.

Requests are validated, never rebuilt: the validated models only check the fields
the gateway relies on (``extra="allow"``), and the caller's dict is forwarded, so
fields we do not know about still reach the provider unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from aigateway.errors import InvalidRequest

ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
]
MAX_MESSAGES = 100_000
_M = TypeVar("_M", bound=BaseModel)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(_Open):
    type: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Open):
    include_usage: bool = False


class ChatRequest(_Open):
    model: ModelName
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None


class EmbeddingsRequest(_Open):
    model: ModelName
    input: (
        Annotated[str, StringConstraints(min_length=1)]
        | Annotated[list[str], Field(min_length=1, max_length=2048)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[list[int]], Field(min_length=1, max_length=2048)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None


def validate_chat(body: dict[str, Any]) -> ChatRequest:
    return _validate(ChatRequest, body)


def validate_embeddings(body: dict[str, Any]) -> EmbeddingsRequest:
    return _validate(EmbeddingsRequest, body)


def _validate(model: type[_M], body: dict[str, Any]) -> _M:
    try:
        # model_validate without its wrapper (one call per request, on every request)
        return cast(_M, model.__pydantic_validator__.validate_python(body))
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = _dotted(first["loc"])
        raise InvalidRequest(f"Invalid '{loc}': {first['msg']}", param=loc) from None


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = part
        elif part in ("str", "list[ContentPart]", "none") or part.startswith(
            ("list[", "constrained-")
        ):
            continue  # union branch names add nothing for the caller
        else:
            out += f".{part}"
    return out


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
