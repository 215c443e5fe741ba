"""Guardrails on streamed answers: the text gate table-driven over every detector,
action and chunk size, then end to end with the official SDKs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anthropic
import openai
import pytest

from aigateway import logread
from aigateway.config.model import Guardrails
from aigateway.guard import Rules, compile_rules
from aigateway.guard_stream import (
    MAX_PENDING,
    AnthropicStreamGuard,
    ChatStreamGuard,
    TextGate,
    _finish_only,
    _plain_text_at,
    _string_end,
)
from aigateway.promptlog import log_files
from aigateway.providers.base import Batch, Chunk
from tests.conftest import KEY, OTHER_KEY, Both, GatewayFactory
from tests.fakes import Reply, anthropic_events, anthropic_message, chunk_events
from tests.test_guardrails import DETECTED, LOOK_ALIKES, guarded
from tests.test_messages_api import client

SIZES = (1, 2, 5, 13, 1000)


def rules(**config: object) -> Rules:
    compiled = compile_rules(Guardrails.model_validate({"responses": True, **config}))
    assert compiled is not None
    return compiled


def through(gate: TextGate, text: str, size: int) -> list[str]:
    """What the gate lets out for each piece of ``text`` cut every ``size`` characters,
    then at the end."""
    return [gate.feed(text[i : i + size]) for i in range(0, len(text), size)] + [gate.flush()]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    ("rule", "text", "action"),
    [
        (rule, text, action)
        for rule, text in DETECTED
        for action in ("log", "redact", "block")
        if not (rule == "injection" and action == "redact")
    ],
)
def test_gate_every_detector_action_and_chunk_size(
    rule: str, text: str, action: str, size: int
) -> None:
    r = rules(**{rule: action})
    answer = f"Sure: {text}; anything else?"
    start, end, _, _ = r.find(answer)[0]
    gate = TextGate(r)
    out = "".join(through(gate, answer, size))
    assert gate.hits == [(rule, action)]
    if action == "log":
        assert out == answer
    elif action == "redact":
        assert out == answer[:start] + f"[REDACTED:{rule}]" + answer[end:]
    else:
        assert gate.blocked == rule
        assert answer.startswith(out) and len(out) <= start  # nothing of the match left


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("rule", "text"), LOOK_ALIKES)
def test_gate_passes_look_alikes(rule: str, text: str, size: int) -> None:
    gate = TextGate(rules(**{rule: "block"}))
    assert "".join(through(gate, text, size)) == text
    assert gate.hits == [] and gate.blocked is None


def test_gate_holds_only_what_it_must() -> None:
    gate = TextGate(rules(email="redact", stream_window=16))
    # all but the last 16 characters go through at once
    assert gate.feed("a" * 10 + " " + "b" * 20 + " ") == "a" * 10 + " " + "b" * 5
    # and not the word being written: it may become an e-mail address
    assert gate.feed("jane.doe@exa") == "b" * 12
    # nor a match that ends within the last 16: it may still grow
    assert gate.feed("mple.com and some more") == "bbb "
    assert gate.flush() == "[REDACTED:email] and some more"
    only_log = TextGate(rules(email="log"))
    assert only_log.feed("jane.doe@exa") == "jane.doe@exa"  # log: nothing held
    assert only_log.feed("mple.com") == "mple.com"
    assert only_log.flush() == "" and only_log.hits == [("email", "log")]  # seen whole


def test_gate_holds_an_open_private_key_and_stays_bounded() -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(["QUJD" * 16] * 30)
    gate = TextGate(rules(secrets="redact"))
    out = through(gate, "here: " + key + "\n-----END RSA PRIVATE KEY----- ok", 7)
    assert "".join(out) == "here: [REDACTED:secrets] ok"
    # a key that never closes is held up to the bound, then let go: memory stays flat
    gate = TextGate(rules(secrets="redact"))
    held = 0
    for _ in range(3000):
        gate.feed("-----BEGIN PRIVATE KEY----- " + "x" * 20 if held == 0 else "y" * 20 + " ")
        held = len(gate._text)
        assert held <= MAX_PENDING + 2 * 128 + 40


class Ending:
    finished = False


def _chat_batch(pieces: list[str], finish: str = "stop") -> Batch:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    raw = b""
    for piece in pieces:
        choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
        raw += b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"
    last = {"index": 0, "delta": {}, "finish_reason": finish}
    return Batch([raw, Chunk(data={**base, "choices": [last]})])


def _contents(batch: Batch) -> list[tuple[str, str | None]]:
    out = []
    for chunk in batch.all_chunks():
        data = json.loads(chunk.encode())  # what the caller gets, re-read
        choice = data["choices"][0]
        out.append((choice["delta"].get("content", ""), choice.get("finish_reason")))
    return out


PIECES = ["Mail the whole team at ", "ann@exam", "ple.org", " before the meeting today."]


def test_chat_chunks_keep_their_boundaries_read_by_read() -> None:
    """Chunks that come one upstream read each: each carries what the gate lets
    through when it comes."""
    watch = ChatStreamGuard(rules(email="redact", stream_window=16))
    got = []
    for piece in PIECES:
        batch = _chat_batch([piece])
        batch.parts = batch.parts[:1]  # the text chunk alone
        watch(batch)
        got += _contents(batch)
    end = _chat_batch([])
    watch(end)
    got += _contents(end)
    assert [text for text, _ in got] == [
        "Mail th",
        "e whole ",
        "",  # checked every 8 characters (half the window): held till then
        "team at [REDACTED:email] before th",
        "e meeting today.",  # the last chunk carries what was held
    ]
    assert got[-1][1] == "stop"
    assert watch.hits() == [("email", "redact")]


def test_chunks_of_one_read_are_checked_together() -> None:
    """Chunks one upstream read brought are checked as one text (they go to the
    caller in one write anyway): chunks keep their text while it is what comes out,
    the first that differs carries the rest, later ones carry nothing."""
    watch = ChatStreamGuard(rules(email="redact", stream_window=16))
    batch = _chat_batch(PIECES)  # a run of relayed text chunks, then the finish
    watch(batch)
    assert _contents(batch) == [
        ("Mail the whole team at ", None),  # unchanged: as it came
        ("[REDACTED:email] before th", None),  # all the rest the check let out
        ("", None),
        ("", None),
        ("e meeting today.", "stop"),  # the window held back, with the finish
    ]
    # The finish in the same read: the text is checked as the end of the answer,
    # and the finish chunk is left as it came.
    batch = _chat_batch(PIECES)
    finish = batch.parts[1]
    assert isinstance(finish, Chunk) and isinstance(batch.parts[0], bytes)
    finish_event = b"data: " + finish.encode() + b"\n\n"
    batch.parts = [batch.parts[0] + finish_event]
    watch = ChatStreamGuard(rules(email="redact", stream_window=16))
    watch(batch)
    assert _contents(batch) == [
        ("Mail the whole team at ", None),
        ("[REDACTED:email] before the meeting today.", None),
        ("", None),
        ("", None),
        ("", "stop"),
    ]
    assert isinstance(batch.parts[0], bytes) and batch.parts[0].endswith(finish_event)
    # nothing to change: the run is the very bytes that came
    clean = _chat_batch(["No address ", "in this ", "answer."])
    run = clean.parts[0]
    assert isinstance(run, bytes)
    whole = run + finish_event
    clean.parts = [whole]
    ChatStreamGuard(rules(email="redact", stream_window=16))(clean)
    assert clean.parts == [whole] and clean.parts[0] is whole


#: plain texts, escapes and long texts mixed: the read-at-once
#: loop stops at each and goes on after it
MIXED = [
    "Plain ", "text, ", 'a "quoted" bit ', "back\\slash ", "", "ünï ", "mail ann@",
    "x.org ", "more ", "and more ", "café ", "then ", "long " * 300, "after it ",
    "a\nnew line ", "tab\tbed ", "and " * 220, "the end, bob@y.io",
]  # fmt: skip


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("other_at", [None, 0, 3, 6, 12])
def test_a_read_of_mixed_events_gives_what_the_gate_gives(
    compact: bool, other_at: int | None
) -> None:
    """Events alike and not (escapes, a role chunk, a chunk of another choice) in
    one read: every event stays JSON, in its place, and choice 0's text is what
    the gate makes of the whole answer."""
    separators = (",", ":") if compact else (", ", ": ")
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}

    def event(choice: dict[str, object]) -> bytes:
        data = {**base, "choices": [choice], "usage": None}
        return b"data: " + json.dumps(data, separators=separators).encode() + b"\n\n"

    other = event({"index": 1, "delta": {"content": "ann@x.org"}, "finish_reason": None})
    events = [event({"index": 0, "delta": {"role": "assistant", "content": ""}})]
    for n, piece in enumerate(MIXED):
        if n == other_at:
            events.append(other)
        events.append(event({"index": 0, "delta": {"content": piece}, "finish_reason": None}))
    events.append(event({"index": 0, "delta": {}, "finish_reason": "stop"}))
    batch = Batch([b"".join(events)])
    r = rules(email="redact", stream_window=16)
    ChatStreamGuard(r)(batch)
    run = batch.parts[0]
    assert isinstance(run, bytes)
    out = [json.loads(e) for e in (e[6:] for e in run.split(b"\n\n")) if e]
    assert len(out) == len(events)
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in out if c["choices"][0]["index"] == 0
    )
    gate = TextGate(r)
    assert text == gate.last("".join(MIXED))
    assert text.count("[REDACTED:email]") == 2
    indexes = [c["choices"][0]["index"] for c in out]
    if other_at is None:
        assert indexes == [0] * len(out)
    else:  # the other choice's event where it came (after the role chunk and others)
        assert indexes.index(1) == other_at + 1 and indexes.count(1) == 1


@pytest.mark.parametrize(
    ("data", "only"),
    [
        ({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, True),
        (
            {"choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]},
            True,
        ),
        ({"choices": [{"delta": {}, "finish_reason": "stop", "index": 0}], "usage": None}, True),
        ({"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}]}, False),
        ({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}, False),
        ({"choices": [{"index": 0, "delta": {}, "finish_reason": None}]}, False),
        ({"choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]}, False),
        ({"choices": [{"index": 10, "delta": {}, "finish_reason": "stop"}]}, False),
        (
            {
                "choices": [
                    {"index": 0, "delta": {}, "finish_reason": "stop"},
                    {"index": 1, "delta": {}, "finish_reason": "stop"},
                ]
            },
            False,
        ),
        ({"choices": [{"index": 0, "delta": {"tool_calls": []}, "finish_reason": "stop"}]}, False),
        ({"choices": [{"index": 0, "delta": {}}]}, False),
    ],
)
@pytest.mark.parametrize("compact", [True, False])
def test_finish_only(data: dict[str, object], only: bool, compact: bool) -> None:
    """Only an event with nothing for the gate in it is recognised (anything else
    goes the general way)."""
    separators = (",", ":") if compact else (", ", ": ")
    assert _finish_only(b"data: " + json.dumps(data, separators=separators).encode()) is only


@pytest.mark.parametrize(
    ("raw", "end"),
    [
        (b'"abc"', 4),
        (b'"a\\"b"', 5),  # an escaped quote is not the end
        (b'"a\\\\"b"', 4),  # an escaped backslash, then the end
        (b'"a\\\\\\"b"', 7),
        (b'"open', -1),
    ],
)
def test_string_end(raw: bytes, end: int) -> None:
    assert _string_end(raw, 0) == end


@pytest.mark.parametrize("ascii_only", [True, False])
def test_chunks_changed_in_place_keep_escapes_and_unicode(ascii_only: bool) -> None:
    """Text chunks are spliced in their JSON as it came: escapes, quotes, non-ASCII
    text and the fields around the content survive."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    pieces = ['Dis "à" ', "mail ann@", "x.org\n", "ok ", "Ünïcödé ✓ " * 10]
    raw = b""
    for piece in pieces:
        choice = {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}
        data = {**base, "choices": [choice], "usage": None}
        raw += b"data: " + json.dumps(data, ensure_ascii=ascii_only).encode() + b"\n\n"
    last = {"index": 0, "delta": {}, "finish_reason": "stop"}
    batch = Batch([raw + b"data: " + json.dumps({**base, "choices": [last]}).encode() + b"\n\n"])
    ChatStreamGuard(rules(email="redact", stream_window=16))(batch)
    chunks = [json.loads(c.encode()) for c in batch.all_chunks()]
    assert len(chunks) == len(pieces) + 1
    assert all(c["usage"] is None and c["choices"][0]["logprobs"] is None for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "".join(pieces).replace("ann@x.org", "[REDACTED:email]")


def test_text_split_mid_character_or_not_utf8_is_checked_and_sent_readable() -> None:
    """An emoji split between two chunks' escapes (half a surrogate pair each), and
    bytes that are not UTF-8: the gate sees the text as a client reads it, and
    what it sends is JSON a client can read."""
    base = b'{"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":'
    pieces = [
        b'[{"index":0,"delta":{"content":"smile \\ud83d"},"finish_reason":null}]}',
        b'[{"index":0,"delta":{"content":"\\ude00 mail ann@x.org "},"finish_reason":null}]}',
        b'[{"index":0,"delta":{"content":"bad \xff byte, "},"finish_reason":null}]}',
        b'[{"index":0,"delta":{"content":"bad \xfe a@b.co"},"finish_reason":"stop"}]}',
    ]
    batch = Batch([b"".join(b"data: " + base + piece + b"\n\n" for piece in pieces)])
    ChatStreamGuard(rules(email="redact", stream_window=16))(batch)
    run = batch.parts[0]
    assert isinstance(run, bytes)
    texts = [
        json.loads(event[6:].decode("utf-8", "replace"))["choices"][0]["delta"]["content"]
        for event in run.split(b"\n\n")
        if event
    ]
    assert "".join(texts) == (
        "smile \ud83d\ude00 mail [REDACTED:email] bad \ufffd byte, bad \ufffd [REDACTED:email]"
    )
    assert b"ann@x.org" not in run and b"a@b.co" not in run


def test_log_only_rules_leave_the_stream_as_it_came() -> None:
    watch = ChatStreamGuard(rules(email="log", secrets="log"))
    batch = _chat_batch(["Mail ", "ann@exam", "ple.org", " or use sk-proj-abcdefghijklmnopqrstu"])
    before = batch.encode()
    watch(batch)
    assert batch.encode() == before  # not a byte changed, nothing held
    assert set(watch.hits()) == {("email", "log"), ("secrets", "log")}  # across chunks too


def test_tool_call_chunks_pass_untouched() -> None:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a@b.co":1}'}}
    delta = {"content": None, "tool_calls": [call]}
    raw = json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    batch = Batch([b"data: " + raw.encode() + b"\n\n"])
    ChatStreamGuard(rules(email="redact"))(batch)
    assert batch.encode() == b"data: " + raw.encode() + b"\n\n"


def test_text_held_at_the_end_of_a_stream_without_a_finish_is_not_lost() -> None:
    stream = Ending()
    watch = ChatStreamGuard(rules(email="redact"), stream)
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    choice = {"index": 0, "delta": {"content": "short answer, mail a@b.co"}}
    batch = Batch([b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"])
    watch(batch)
    assert _contents(batch) == [("", None)]  # held: within the window
    stream.finished = True
    end = Batch([])
    watch(end)
    chunks = [json.loads(c.encode()) for c in end.all_chunks()]
    assert chunks == [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "short answer, mail [REDACTED:email]"},
                    "finish_reason": None,
                }
            ],
        }
    ]


@pytest.mark.parametrize("finish_in_the_run", [False, True])
def test_chat_block_withholds_the_rest(finish_in_the_run: bool) -> None:
    watch = ChatStreamGuard(rules(card="block"))
    first = _chat_batch(["Card: 4111 1111 ", "1111 1111 ", "is yours."])
    if finish_in_the_run:  # the finish relayed with the text, as one read brings it
        run, finish = first.parts
        assert isinstance(run, bytes) and isinstance(finish, Chunk)
        first.parts = [run + b"data: " + finish.encode() + b"\n\n"]
    watch(first)
    got = _contents(first)
    text = "".join(t for t, _ in got)
    assert "4111" not in text and "withheld by the gateway's 'card' guardrail" in text
    assert got[-1][1] == "content_filter"


def test_anthropic_events_redacted_and_blocked() -> None:
    events = anthropic_events(anthropic_message("mail ann@example.com now please"))
    watch = AnthropicStreamGuard(rules(email="redact"))
    batch = Batch([b"".join(events)])
    watch(batch)
    out = b"".join(p for p in batch.parts if isinstance(p, bytes))
    deltas = [
        json.loads(line[6:])["delta"]["text"]
        for line in out.split(b"\n")
        if line.startswith(b"data: ") and b"text_delta" in line
    ]
    assert "".join(deltas) == "mail [REDACTED:email] now please"
    blocked = AnthropicStreamGuard(rules(email="block"))
    batch = Batch(list(events))
    blocked(batch)
    out = b"".join(p for p in batch.parts if isinstance(p, bytes))
    assert b"ann@example.com" not in out and b"withheld" in out
    assert b'"stop_reason":"refusal"' in out


# --- end to end --------------------------------------------------------------------


async def test_streamed_answers_redacted_and_blocked_through_the_openai_sdk(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(
        edit=guarded(tmp_path, "{email: redact, card: block, ssn: log, responses: true}")
    )
    gw.upstream.script += [
        Reply(events=chunk_events(pieces=("To ", "bob@exa", "mple.com", " (ssn 123-45-", "6789)"))),
        Reply(events=chunk_events(pieces=("Card ", "4111 1111", " 1111 1111", " ok"))),
    ]  # fmt: skip
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        stream = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        blocked = [chunk async for chunk in stream]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "To [REDACTED:email] (ssn 123-45-6789)"  # ssn: log only
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    withheld = "".join(ch.choices[0].delta.content or "" for ch in blocked if ch.choices)
    assert "4111" not in withheld and "'card' guardrail" in withheld
    assert blocked[-1].choices[0].finish_reason == "content_filter"
    hits = gw.metrics.guardrail_hits.values
    assert hits[("acme", "email", "redact", "response")] == 1
    assert hits[("acme", "ssn", "log", "response")] == 1
    assert hits[("acme", "card", "block", "response")] == 1
    rows = list(logread.rows(log_files(tmp_path / "p.sqlite")))
    assert set(json.loads(rows[0]["guardrails"])) == {"response:email:redact", "response:ssn:log"}
    assert "[REDACTED:email]" in rows[0]["response_body"]
    assert rows[0]["usage_source"] == "provider"  # the upstream's usage still came
    assert rows[1]["usage_source"] == "provider" and rows[1]["completion_tokens"] == 4
    everything = gw.log.getvalue() + json.dumps(rows) + repr(hits)
    for secret in ("bob@example.com", "4111 1111 1111 1111"):
        assert secret not in everything


async def test_a_stream_without_finish_reason_keeps_its_held_text(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(edit=guarded(tmp_path, "{email: redact, responses: true}"))
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    events: list[object] = [
        {**base, "choices": [{"index": 0, "delta": {"content": piece}}]}
        for piece in ("Write ", "to ann@", "example.com", " today")
    ]
    gw.upstream.script.append(Reply(events=[*events, b"[DONE]"]))  # no finish_reason at all
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == "Write to [REDACTED:email] today"


async def test_anthropic_stream_relayed_with_redaction(both: Both) -> None:
    gw, fake = await both(
        edit=lambda t: t.replace(
            "other: {}", "other: {guardrails: {email: redact, responses: true}}"
        )
    )
    fake.script.append(Reply(body=anthropic_message("Reach ann@example.com any time")))
    async with (
        client(gw, OTHER_KEY) as c,
        c.messages.stream(
            model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "who?"}]
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Reach [REDACTED:email] any time"
    assert final.usage.output_tokens == 5
    assert gw.metrics.guardrail_hits.values[("other", "email", "redact", "response")] == 1


async def test_messages_stream_from_an_openai_upstream_blocked(both: Both) -> None:
    gw, _ = await both(
        edit=lambda t: t.replace("other: {}", "other: {guardrails: {ssn: block, responses: true}}")
    )
    gw.upstream.script.append(Reply(events=chunk_events(pieces=("It is ", "123-45-6789", "."))))
    async with (
        anthropic.AsyncAnthropic(base_url=gw.root, api_key=OTHER_KEY, max_retries=0) as c,
        c.messages.stream(
            model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "ssn?"}]
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert "123-45-6789" not in text and "'ssn' guardrail" in text
    assert final.stop_reason == "refusal"


def _reference_plain_text_at(raw: bytes) -> int:
    """The chunk check as first written, with a regex for ':' and the spaces after."""
    value_re = re.compile(rb":\s*")
    if raw.count(b'"index"') != 1 or raw.count(b'"content"') != 1 or b'"tool_calls"' in raw:
        return -1
    at = raw.find(b'"finish_reason"')
    if at >= 0:
        value = value_re.match(raw, at + 15)
        if value is None or not raw.startswith(b"null", value.end()):
            return -1
    end = -1
    for key, ok in ((b'"index"', b"0"), (b'"content"', b'"')):
        value = value_re.match(raw, raw.find(key) + len(key))
        if value is None or raw[value.end() : value.end() + 1] != ok:
            return -1
        end = value.end()
        if key == b'"index"' and raw[end + 1 : end + 2].isdigit():
            return -1
    return end


@pytest.mark.parametrize(
    "raw",
    [
        b'{"choices":[{"index":0,"delta":{"content":"hi"}}]}',
        b'{"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}',
        b'{"choices":[{"index" :0,"delta":{"content":"hi"}}]}',  # space before ':'
        b'{"choices":[{"index":\n\t 0,"delta":{"content":\r\n"hi"}}]}',
        b'{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}',
        b'{"choices":[{"index":1,"delta":{"content":"hi"}}]}',
        b'{"choices":[{"index":10,"delta":{"content":"hi"}}]}',
        b'{"choices":[{"index":0,"delta":{"content":null}}]}',
        b'{"choices":[{"index":0,"delta":{"tool_calls":[],"content":"x"}}]}',
        b'{"choices":[{"index":0},{"index":1}],"content":"x"}',
        b'{"choices":[{"index":0,"delta":{"content":',  # cut short
        b'{"choices":[{"index":0,"finish_reason":',
        b'{"choices":[{"index":0,"delta":{"content":"a\\"b"},"finish_reason":null}]}',
    ],
)
def test_the_plain_chunk_check_matches_its_reference(raw: bytes) -> None:
    assert _plain_text_at(raw) == _reference_plain_text_at(raw)
