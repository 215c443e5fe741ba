"""OpenAI wire types the gateway inspects: request validation (token counts: usage.py).

Requests are validated, never rebuilt: the validated models only check the fields
the gateway relies on (``extra="allow"``), and the caller's dict is forwarded, so
fields we do not know about still reach the provider unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from aigateway.errors import InvalidRequest

#: the schema's limits, shared with the parse step's fast check (``parse.plain_chat``)
MAX_MODEL_CHARS = 256
MAX_MESSAGES = 100_000
MAX_CHOICES = 128
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ROLES = frozenset(get_args(Role))
ModelName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_MODEL_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
_M = TypeVar("_M", bound=BaseModel)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(_Open):
    type: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ChatMessage(_Open):
    role: Role
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
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None


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
