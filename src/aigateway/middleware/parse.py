"""Read the body once, parse it as JSON, validate the fields the gateway relies on.

Every malformed input is a 4xx in the OpenAI error shape: a body over the limit
(413), one that is not JSON (415 for another media type, 400 for bad JSON, bad
UTF-8, NaN/Infinity or nesting too deep), or a schema error (400 naming the field).
"""

from __future__ import annotations

import json
from typing import Any

from aigateway.errors import InvalidRequest, UnsupportedMediaType
from aigateway.jsonc import loader
from aigateway.pipeline import Handler, Reply, RequestContext
from aigateway.providers.anthropic_inbound import messages_to_chat, validate_messages
from aigateway.wire import (
    MAX_CHOICES,
    MAX_MESSAGES,
    MAX_MODEL_CHARS,
    ROLES,
    validate_chat,
    validate_embeddings,
)

#: deepest nesting accepted; far beyond any real request, far below the C stack
MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: one decoder for every request (``json.loads`` with options builds a new one per call)
_loads = loader(json.JSONDecoder(parse_constant=_reject_constant))


def parse_json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid UTF-8 (byte {exc.start}).") from None
    if _too_deep(text):
        raise InvalidRequest(f"The request body is nested deeper than {MAX_DEPTH} levels.")
    try:
        data = _loads(text)
    except RecursionError:
        raise InvalidRequest("The request body is nested too deeply.") from None
    except ValueError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {_short(exc)}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data


def _too_deep(text: str) -> bool:
    """Cheap pre-check: only bodies with many brackets are scanned properly."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _short(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    return str(exc)[:200]


#: media types whose body may be JSON; curl -d sends form-urlencoded unless told otherwise
_LENIENT_MEDIA = frozenset({"application/json", "text/plain", "application/x-www-form-urlencoded"})


def _is_json_media(content_type: str | None) -> bool:
    if not content_type:
        return True  # the body decides
    media = content_type.split(";", 1)[0].strip().lower()
    return media in _LENIENT_MEDIA or media.endswith("+json")


_MAX_INT = 2**63 - 1
#: the optional integer fields and their largest plain value (all at least 1)
_COUNTS = (("max_tokens", _MAX_INT), ("max_completion_tokens", _MAX_INT), ("n", MAX_CHOICES))


def plain_chat(body: dict[str, Any]) -> tuple[bool, bool] | None:
    """``(stream, include_usage)`` of a chat request that ``wire.ChatRequest``
    certainly accepts, checked without building it; None when unsure (then the
    schema decides, and words the error).

    Accepts a subset of what the schema does: a printable model name, messages
    whose content is text or absent, and the optional fields with their plain
    types (tests hold it to the schema). Content parts, odd names and anything
    malformed take the schema's way."""
    model = body.get("model")
    if not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_CHARS:
        return None
    if not model.isprintable():
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not 0 < len(messages) <= MAX_MESSAGES:
        return None
    for message in messages:
        if not isinstance(message, dict):
            return None
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            return None
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            return None
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            return None
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        return None
    usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            return None
        wanted = options.get("include_usage", False)
        if not isinstance(wanted, bool):
            return None
        usage = wanted
    for field, most in _COUNTS:
        value = body.get(field)
        if value is not None and not (type(value) is int and 1 <= value <= most):
            return None
    return stream, usage


class ParseBody:
    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        if not _is_json_media(ctx.headers.get("content-type")):
            raise UnsupportedMediaType(
                "Send the request body as JSON with 'Content-Type: application/json'."
            )
        body = parse_json(await ctx.read_body())
        if ctx.endpoint == "chat":
            plain = plain_chat(body)
            if plain is None:
                req = validate_chat(body)  # the schema's own verdict, and its error
                plain = req.stream, bool(req.stream_options and req.stream_options.include_usage)
            ctx.stream, ctx.client_wants_usage = plain
        elif ctx.endpoint == "messages":
            validate_messages(body)
            ctx.anthropic_body = body
            ctx.stream = body.get("stream") is True
            ctx.client_wants_usage = True  # message_delta carries the usage
            body = messages_to_chat(body)
        else:
            validate_embeddings(body)
        ctx.body = body
        return await call_next(ctx)
