"""``/v1/messages`` for the Anthropic SDK: passed through to Anthropic upstreams,
translated to and from OpenAI-format ones."""

from __future__ import annotations

import json

import anthropic
import pytest
from anthropic.types import ToolParam

from tests.conftest import ANTHROPIC_SECRET as SECRET
from tests.conftest import KEY, OTHER_KEY, Both, Gateway
from tests.fakes import Reply, anthropic_message, chunk_events, completion

TOOL: ToolParam = {
    "name": "weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def client(gw: Gateway, key: str = OTHER_KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.root, api_key=key, max_retries=0)


# --- passed through to Anthropic -------------------------------------------------------


async def test_anthropic_upstream_gets_the_request_unchanged(both: Both) -> None:
    gw, fake = await both()
    fake.script.append(
        Reply(
            body=anthropic_message(
                "Sunny.",
                tool={"id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                stop="tool_use",
            )
        )
    )
    async with client(gw) as c:
        message = await c.messages.create(
            model="claude-x",
            max_tokens=300,
            system=[{"type": "text", "text": "Brief.", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": "Paris?"}],
            tools=[TOOL],
            extra_headers={"anthropic-beta": "client-beta-2"},
        )
    seen = fake.seen[0]
    assert seen.body["system"][0]["cache_control"] == {"type": "ephemeral"}  # untouched
    assert seen.body["model"] == "claude-sonnet-4-5" and seen.body["max_tokens"] == 300
    assert seen.headers["x-api-key"] == SECRET
    assert seen.headers["anthropic-beta"] == "gateway-beta-1,client-beta-2"
    assert message.stop_reason == "tool_use"
    assert message.content[1].type == "tool_use" and message.content[1].input == {"city": "Paris"}
    assert message.usage.input_tokens == 12 and message.usage.output_tokens == 5


async def test_anthropic_stream_relayed(both: Both) -> None:
    gw, fake = await both()
    fake.script.append(Reply(body=anthropic_message("one two three")))
    async with (
        client(gw) as c,
        c.messages.stream(
            model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "count"}]
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "one two three"
    assert final.usage.output_tokens == 5
    assert fake.seen[0].body["stream"] is True
    line = [json.loads(x) for x in gw.log.getvalue().splitlines() if '"request_id"' in x][-1]
    assert line["endpoint"] == "messages" and line["completion_tokens"] == 5
    assert line["usage_source"] == "provider"


# --- translated to an OpenAI-format upstream -------------------------------------------


async def test_messages_to_an_openai_upstream(both: Both) -> None:
    gw, _ = await both()
    gw.upstream.script += [
        Reply(body=completion(model="gpt-4o", text="Bonjour", prompt=9, completion=2)),
        Reply(
            body={
                **completion(model="gpt-4o", text=""),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "logprobs": None,
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                                }
                            ],
                        },
                    }
                ],
            }
        ),
    ]
    async with client(gw, KEY) as c:
        hello = await c.messages.create(
            model="gpt-4o",
            max_tokens=20,
            system="Answer in French.",
            messages=[{"role": "user", "content": "Hello"}],
        )
        tool = await c.messages.create(
            model="gpt-4o",
            max_tokens=20,
            messages=[{"role": "user", "content": "Rome?"}],
            tools=[TOOL],
            tool_choice={"type": "any"},
        )
    sent = gw.upstream.seen[0].body
    assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert sent["max_tokens"] == 20
    assert hello.content[0].type == "text" and hello.content[0].text == "Bonjour"
    assert hello.stop_reason == "end_turn"
    assert (hello.usage.input_tokens, hello.usage.output_tokens) == (9, 2)
    assert gw.upstream.seen[1].body["tool_choice"] == "required"
    assert tool.stop_reason == "tool_use"
    assert tool.content[0].type == "tool_use" and tool.content[0].input == {"city": "Rome"}


async def test_streamed_messages_from_an_openai_upstream(both: Both) -> None:
    gw, _ = await both()
    gw.upstream.script.append(Reply(events=chunk_events(model="gpt-4o", pieces=("Hel", "lo"))))
    async with (
        client(gw, KEY) as c,
        c.messages.stream(
            model="gpt-4o", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Hello"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 2)
    assert gw.upstream.seen[0].body["stream_options"] == {"include_usage": True}


async def test_count_tokens(both: Both) -> None:
    gw, _ = await both()
    async with client(gw, KEY) as c:
        counted = await c.messages.count_tokens(
            model="gpt-4o", messages=[{"role": "user", "content": "hello world"}]
        )
        with pytest.raises(anthropic.PermissionDeniedError):
            await c.messages.count_tokens(  # not in acme's allow-list
                model="claude-x", messages=[{"role": "user", "content": "x"}]
            )
    assert counted.input_tokens == 9


async def test_errors_in_the_anthropic_shape(both: Both) -> None:
    gw, _ = await both()
    async with client(gw, "aig-nobody-0123456789") as c:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await c.messages.create(
                model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
    assert auth.value.body["type"] == "error"  # type: ignore[index]
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    async with client(gw, KEY) as c:
        with pytest.raises(anthropic.BadRequestError) as bad:
            await c.messages.create(
                model="gpt-4o", max_tokens=0, messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(anthropic.NotFoundError):
            await c.messages.create(
                model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
    assert "max_tokens" in bad.value.message


async def test_limits_apply_to_messages_too(both: Both) -> None:
    acme = "acme: {models: [gpt-4o, with-backup, text-embedding-3-small, mock]"
    gw, _ = await both(edit=lambda t: t.replace(acme, acme + ", rate_limits: {rpm: 1}"))
    async with client(gw, KEY) as c:
        await c.messages.create(
            model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
        with pytest.raises(anthropic.RateLimitError) as limited:
            await c.messages.create(
                model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert limited.value.response.headers["retry-after"]


async def test_streamed_tool_use_from_an_openai_upstream(both: Both) -> None:
    gw, _ = await both()
    base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    call = {"index": 0, "id": "call_7", "type": "function",
            "function": {"name": "weather", "arguments": ""}}  # fmt: skip
    events = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me"},
                              "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": '{"city": '}}]}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": '"Oslo"}'}}]}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 8,
                                           "total_tokens": 28}},
        b"[DONE]",
    ]  # fmt: skip
    gw.upstream.script.append(Reply(events=events))
    async with (
        client(gw, KEY) as c,
        c.messages.stream(
            model="gpt-4o",
            max_tokens=50,
            messages=[{"role": "user", "content": "Oslo?"}],
            tools=[TOOL],
        ) as stream,
    ):
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[0].type == "text" and final.content[0].text == "Let me"
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.id == "call_7" and tool.input == {"city": "Oslo"}
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20, 8)


async def test_guardrails_redact_what_an_anthropic_upstream_gets(both: Both) -> None:
    gw, fake = await both(
        edit=lambda t: t.replace("other: {}", "other: {guardrails: {email: redact}}")
    )
    async with client(gw) as c:
        await c.messages.create(
            model="claude-x",
            max_tokens=20,
            system="Reply to ann@example.com",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "cc bob@example.com"}]}
            ],
        )
    sent = fake.seen[0].body
    assert sent["system"] == "Reply to [REDACTED:email]"
    assert sent["messages"][0]["content"][0]["text"] == "cc [REDACTED:email]"
