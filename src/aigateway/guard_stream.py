"""Guardrails on streamed answers (pure: batches in, the same batches changed).

A ``TextGate`` checks one stream of answer text as it arrives, every
``stream_window / 2`` characters (a check reads the whole window, so not at every
piece). With only ``log`` rules it lets every piece through at once and checks it
later together with the text just before it, so a match split across chunks is
still seen. With ``redact`` or ``block`` rules it holds back the last
``stream_window`` characters (and up to half a window more between checks), and
any match still growing at the end, until it knows what they are: a match is never split
between what was delivered and what was held, so redaction works across chunk
boundaries. An opened private key block is held until it closes (up to
``MAX_PENDING`` characters: what is held is bounded). At the end of the answer
the rest is checked and let through.

The stream keeps its chunks. The text chunks one upstream read brought go
through the gate as one text (they reach the caller in one write anyway); what
it lets through is laid over them, each keeping its text while that is what
comes out (possibly ``""`` after that), and the last chunk of a choice carries
what was still held. On a block the text held is dropped, the chunk says the answer
was withheld, later text is dropped, and the finish reason becomes
``content_filter`` (``refusal`` for Anthropic events). The upstream is still read
to its end, so its usage (what is billed) arrives as usual.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from aigateway.guard import Rules
from aigateway.jsonc import dumpb, quoteb
from aigateway.octets import BACKSLASH, LF, QUOTE
from aigateway.providers.base import Batch, Chunk, content_text

#: characters held at most while a match or a private key block is still open
MAX_PENDING = 8192
_OPENER = "-----BEGIN "
_CLOSER = re.compile(r"-----END [A-Z ]*PRIVATE KEY-----")


def withheld(rule: str) -> str:
    return f"[answer withheld by the gateway's '{rule}' guardrail]"


class TextGate:
    def __init__(self, rules: Rules) -> None:
        self._rules = rules
        self._window = rules.stream_window
        self._hold = rules.stream_window if rules.rewrites else 0
        #: text is checked once this much has come since the last check (not at
        #: every piece: a check reads the whole window)
        self._step = rules.stream_window // 2
        self._fresh = 0
        self._secrets = any(rule == "secrets" for rule, _, _ in rules.checks)
        #: recent delivered text (context for matches across the boundary), then
        #: the text held back, which starts at ``_start``
        self._text = ""
        self._start = 0
        #: (rule, action) of each rule that matched, once each
        self.hits: list[tuple[str, str]] = []
        #: the rule that stopped the answer
        self.blocked: str | None = None

    def feed(self, text: str) -> str:
        """More answer text in; the text that may be delivered now out."""
        if self.blocked is not None:
            return ""
        self._text += text
        self._fresh += len(text)
        if self._fresh < self._step:
            return "" if self._hold else text  # log only: checked with what follows
        self._fresh = 0
        if not self._hold:
            self._log()
            return text
        return self._release(final=False)

    def flush(self) -> str:
        """The answer ended: whatever is still held, checked."""
        if self.blocked is not None:
            return ""
        if not self._hold:
            if self._fresh:  # (else all of it was checked already)
                self._fresh = 0
                self._log()
            return ""
        if self._start >= len(self._text):
            return ""  # nothing held: all of it was checked already
        return self._release(final=True)

    def last(self, text: str) -> str:
        """The last text of the answer in, all that may be delivered out: ``feed``
        then ``flush``, with one check instead of two."""
        if self.blocked is not None:
            return ""
        self._text += text
        self._fresh = 0
        if not self._hold:
            self._log()
            return text
        return self._release(final=True)

    def _log(self) -> None:
        for _, _, rule, action in self._rules.find(self._text):
            if (rule, action) not in self.hits:
                self.hits.append((rule, action))
        self._text = self._text[-self._window :]  # context for the next check

    def _release(self, final: bool) -> str:
        text, start = self._text, self._start
        spans = [s for s in self._rules.find(text) if s[1] > start]
        cut = len(text)
        if not final:
            # the window, and the word still being written (e-mails, keys, tokens)
            word = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t")) + 1
            cut = max(start, min(len(text) - self._hold, word))
            if self._secrets:
                opened = text.rfind(_OPENER, start)
                if opened >= 0 and not _CLOSER.search(text, opened):
                    cut = min(cut, opened)
            moved = True
            while moved:  # never split a match: cut before any that reaches past it
                moved = False
                for s, e, _, _ in spans:
                    if s < cut < e and cut > start:
                        cut, moved = max(start, s), True
            if len(text) - cut > MAX_PENDING:  # bounded: give up on what is that long
                cut = len(text) - self._hold
        settled = sorted(s for s in spans if s[1] <= cut or final)
        for _, _, rule, action in settled:
            if (rule, action) not in self.hits:
                self.hits.append((rule, action))
            if action == "block":
                self.blocked = rule
                self._text = ""
                return ""
        out: list[str] = []
        at = start
        for s, e, rule, action in settled:
            if action != "redact" or e <= at:
                continue
            s = max(s, at)
            out += [text[at:s], f"[REDACTED:{rule}]"]
            at = e
        out.append(text[at:cut])
        keep = max(0, cut - self._window)  # context for the next check
        self._text, self._start = text[keep:], cut - keep
        return "".join(out)


def _text_alone(piece: bytes) -> bool:
    """Bytes that can only be the inside of a JSON string on one line: no quote,
    no escape, no newline."""
    return not (QUOTE in piece or BACKSLASH in piece or LF in piece)


class Ending(Protocol):
    """What says whether a stream's batch is its last (the stream itself)."""

    @property
    def finished(self) -> bool: ...


class _Endless:
    finished = False


_ENDLESS = _Endless()


class _Texts:
    """Texts of plain chunks next to each other in a run: each one's bytes (the
    JSON string's, between its quotes), the first starting at ``start``, each
    ``gap`` bytes after the one before; ``after``: where the event after the last
    starts. ``decoded``: the text of a single one that has escapes."""

    __slots__ = ("after", "decoded", "gap", "pieces", "start", "whole")

    def __init__(
        self,
        start: int,
        pieces: list[bytes],
        gap: int,
        after: int,
        whole: bytes,
        decoded: str | None = None,
    ) -> None:
        self.start = start
        self.pieces = pieces
        self.gap = gap
        self.after = after
        #: the pieces joined
        self.whole = whole
        self.decoded = decoded

    def text(self) -> str:
        """All of them, as a client reads them (bytes not UTF-8 replaced)."""
        if self.decoded is not None:
            return self.decoded
        return self.whole.decode("utf-8", "replace")

    def spans(self) -> list[tuple[int, int, str]]:
        """(start, end, text) of each, in the run."""
        if self.decoded is not None:
            return [(self.start, self.start + len(self.whole), self.decoded)]
        out = []
        at = self.start
        for piece in self.pieces:
            out.append((at, at + len(piece), piece.decode("utf-8", "replace")))
            at += len(piece) + self.gap
        return out


class ChatStreamGuard:
    """The gate applied to OpenAI ``chat.completion.chunk`` streams, per choice.

    ``stream.finished`` says whether the batch being checked is the stream's
    last: text still held then (a server that never sent a finish reason) goes
    out in a chunk of its own rather than being lost."""

    def __init__(self, rules: Rules, stream: Ending = _ENDLESS) -> None:
        self._rules = rules
        self._stream = stream
        self.gates: dict[int, TextGate] = {}
        #: id, model and created of the stream's chunks, for a chunk of our own
        self._head: dict[str, Any] = {}
        #: the first plain chunk's JSON, read for ``_head`` only if it is needed
        self._first: bytes | None = None
        #: the bytes before and after (with the blank line) the text of the last
        #: plain chunk seen, and what lies between two texts of chunks alike
        self._around = (b"", b"")
        self._between = b""

    def hits(self) -> list[tuple[str, str]]:
        if not self._rules.rewrites:
            for gate in self.gates.values():
                gate.flush()  # log only: the last text checked, nothing to deliver
        return _hits(self.gates)

    def __call__(self, batch: Batch) -> None:
        if not self._rules.rewrites:  # log only: nothing changes, one look per run
            gate = self.gates.get(0) or self.gates.setdefault(0, TextGate(self._rules))
            for part in batch.parts:
                if isinstance(part, bytes):
                    gate.feed(content_text(part))
                else:
                    self._check(part)
            return
        # Runs relayed as they came stay runs (later hooks need not parse them);
        # chunks stay chunks.
        parts: list[Chunk | bytes] = []
        for part in batch.parts:
            if isinstance(part, bytes):
                parts.append(self._run(part))
            else:
                self._check(part)
                parts.append(part)
        batch.parts = parts
        if self._stream.finished:
            for index, gate in self.gates.items():
                rest = gate.flush()
                if rest:
                    choice = {"index": index, "delta": {"content": rest}, "finish_reason": None}
                    if not self._head and self._first is not None:
                        self._head = _head(self._first)
                    data = {**self._head, "object": "chat.completion.chunk", "choices": [choice]}
                    batch.parts.append(Chunk(data=data))

    def _check(self, chunk: Chunk) -> None:
        """A chunk the general way: parsed, each choice through its gate; re-encoded
        (``raw`` dropped) if it changed."""
        choices = chunk.data.get("choices")
        if not isinstance(choices, list):
            return
        if not self._head:
            self._head = {k: chunk.data.get(k) for k in ("id", "created", "model")}
        for choice in choices:
            if isinstance(choice, dict) and self._choice(choice):
                chunk.raw = None  # re-encoded: the chunk changed

    def _run(self, run: bytes) -> bytes:
        """A run of relayed events, changed where its text changed.

        The text of its plain chunks (one choice's text, no finish: nearly every
        chunk) goes through the gate a stretch at a time, not chunk by chunk: one
        check for all the text one upstream read brought, read and spliced as
        bytes where it sits in the JSON (a parse and a re-encode per chunk would
        cost more than the check). What the gate lets through is laid over the
        stretch's chunks: each keeps its text while that is what comes out, the
        first that differs carries the rest, later ones carry ``""``. A stretch
        just before the chunk that finishes the choice is checked as the end of
        the answer (nothing held back to put in that chunk). Any other event goes
        the general way, after what came before it."""
        stretch: list[_Texts] = []
        edits: list[tuple[int, int, bytes]] = []  # (start, end, new bytes), in order
        pos, size = 0, len(run)
        while pos < size:
            texts = self._alike(run, pos)
            if texts is not None:
                stretch.append(texts)
                pos = texts.after
                continue
            end = run.find(b"\n\n", pos)
            end = size if end < 0 else end
            event = run[pos:end]
            located = self._plain(event)
            if located is not None:
                quote, close, text = located
                body = event[quote + 1 : close]
                stretch.append(_Texts(pos + quote + 1, [body], 0, end + 2, body, text))
                pos = end + 2
                continue
            # The answer's end with no text of its own, right after a stretch: the
            # stretch is checked as the last of the answer, and this event has
            # nothing to change (unless the check stopped the answer: then its
            # finish reason becomes content_filter, the general way).
            finish = bool(stretch) and _finish_only(event)
            if stretch:
                self._lay(stretch, edits, finish)
                stretch = []
            if finish and not self._withheld():
                pos = end + 2
                continue
            new = self._other(Chunk(raw=event[6:]), event)
            if new is not None:
                edits.append((pos, end, new))
            pos = end + 2
        if stretch:
            self._lay(stretch, edits, False)
        if not edits:
            return run
        out: list[bytes] = []
        at = 0
        for start, end, new in edits:
            out += [run[at:start], new]
            at = end
        out.append(run[at:])
        return b"".join(out)

    def _alike(self, run: bytes, pos: int) -> _Texts | None:
        """The events from ``pos`` on that are the last plain chunk's bytes with
        other text in between (text without quotes, escapes or newlines), read in
        one loop: an event is alike if it starts with those bytes before the text
        and ends with those after it. None if the event at ``pos`` is not one of them.

        Sound because what lies between them is a piece of text without a quote or
        a newline: the event is then the plain chunk's JSON with another string in
        it, on one line. The loop stops at the first event that is not alike (a
        text with escapes among them): it reads each event once, so a read of texts
        with and without escapes in turn stays linear."""
        prefix, suffix = self._around
        if not prefix or not run.startswith(prefix, pos) or self._withheld():
            return None
        start = pos + len(prefix)
        pieces: list[bytes] = []
        at = start
        while True:
            end = run.find(b"\n\n", at) + 2  # this event's end (the search stops there)
            close = end - len(suffix)
            if end < 2 or close < at or run[close:end] != suffix:
                break  # not alike
            piece = run[at:close]
            if not _text_alone(piece):
                break
            pieces.append(piece)
            if not run.startswith(prefix, end):
                break
            at = end + len(prefix)
        if not pieces:
            return None
        gap = len(self._between)
        whole = b"".join(pieces)
        after = start + len(whole) + (len(pieces) - 1) * gap + len(suffix)
        return _Texts(start, pieces, gap, after, whole)

    def _plain(self, event: bytes) -> tuple[int, int, str] | None:
        """(opening quote, closing quote, text) of a plain chunk's content in the
        ``data: `` event, or None for any other event. Its bytes around the text
        are kept: the next events may be alike (``_alike``)."""
        if self._withheld():
            return None  # the general way drops the text
        quote = _plain_text_at(event)
        if quote < 0:
            return None
        close = _string_end(event, quote)
        if close < 0:
            return None
        # bytes that are not UTF-8 are checked as a client reads them (replaced)
        string = event[quote : close + 1].decode("utf-8", "replace")
        try:
            text = string[1:-1] if "\\" not in string else json.loads(string)
        except ValueError:
            return None
        if self._first is None:
            self._first = event[6:]
        self._around = event[: quote + 1], event[close:] + b"\n\n"
        self._between = self._around[1] + self._around[0]
        return quote, close, text

    def _other(self, chunk: Chunk, event: bytes) -> bytes | None:
        """Any other event, the general way: its new bytes, or None if unchanged."""
        try:
            self._check(chunk)
        except ValueError:
            # not UTF-8: checked as a client reads it (replaced), and sent so
            chunk = Chunk(raw=event[6:].decode("utf-8", "replace").encode())
            try:
                self._check(chunk)
            except ValueError:
                return None  # not JSON: relayed as it came (no client can read it)
            chunk.raw = None
        return None if chunk.raw is not None else b"data: " + chunk.encode()

    def _withheld(self) -> bool:
        gate = self.gates.get(0)
        return gate is not None and gate.blocked is not None

    def _lay(self, stretch: list[_Texts], edits: list[tuple[int, int, bytes]], final: bool) -> None:
        """Gate a stretch's text; lay what comes out over its chunks (as ``edits``)."""
        gate = self.gates.get(0)
        if gate is None:
            gate = self.gates[0] = TextGate(self._rules)
        given = "".join([texts.text() for texts in stretch])
        out = gate.last(given) if final else gate.feed(given) if given else ""
        if gate.blocked is not None:
            out = withheld(gate.blocked)
        if out == given:
            return
        spans = [span for texts in stretch for span in texts.spans()]
        at = 0
        for n, (start, end, text) in enumerate(spans):
            if at >= 0 and (out[at:] == text if n == len(spans) - 1 else out.startswith(text, at)):
                at += len(text)
                continue
            piece = out[at:] if at >= 0 else ""
            at = -1  # the rest was given: later chunks carry ""
            edits.append((start, end, quoteb(piece)[1:-1]))

    def _choice(self, choice: dict[str, Any]) -> bool:
        index = choice.get("index", 0)
        index = index if isinstance(index, int) else 0
        gate = self.gates.get(index)
        if gate is None:
            gate = self.gates[index] = TextGate(self._rules)
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return False
        before = gate.blocked
        text = delta.get("content")
        text = text if isinstance(text, str) else ""
        out = gate.feed(text) if text else ""
        finishing = bool(choice.get("finish_reason"))
        if finishing:
            out += gate.flush()
        changed = False
        if gate.blocked is not None:
            out = withheld(gate.blocked) if before is None else ""
            if finishing:
                choice["finish_reason"] = "content_filter"
                changed = True
        if out != text:
            delta["content"] = out
            changed = True
        return changed


_BLOCK_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
#: what ``\s`` matches in a bytes pattern (JSON itself allows only the first four)
_SPACE = frozenset(b" \t\n\r\x0b\x0c")


def _value_at(raw: bytes, at: int) -> int:
    """Where the value of the key that ends at ``at`` starts: past a ':' right there
    and any whitespace after it; -1 if no ':' is there. (A loop over the bytes, not
    a regex: compiled, it costs a fraction of a call into ``re``.)"""
    if at >= len(raw) or raw[at] != 58:  # ":"
        return -1
    at += 1
    while at < len(raw) and raw[at] in _SPACE:
        at += 1
    return at


def _choice_zero_only(raw: bytes) -> bool:
    """The chunk has one choice, index 0, and no tool calls (byte searches: quotes
    inside strings are escaped in JSON, so a key found is a key)."""
    if raw.count(b'"index"') != 1 or raw.find(b'"tool_calls"') >= 0:
        return False
    value = _value_at(raw, raw.find(b'"index"') + 7)
    if value < 0 or raw[value : value + 1] != b"0":
        return False
    return not raw[value + 1 : value + 2].isdigit()


def _plain_text_at(raw: bytes) -> int:
    """Where the text of a chunk of one choice (index 0) that does not finish
    starts (its opening quote), or -1 for any other chunk. Byte searches only:
    this runs for every chunk of a guarded stream."""
    if raw.count(b'"content"') != 1 or not _choice_zero_only(raw):
        return -1
    at = raw.find(b'"finish_reason"')
    if at >= 0:
        value = _value_at(raw, at + 15)
        if value < 0 or not raw.startswith(b"null", value):
            return -1
    value = _value_at(raw, raw.find(b'"content"') + 9)
    if value < 0 or raw[value : value + 1] != b'"':
        return -1
    return value


def _finish_only(raw: bytes) -> bool:
    """The chunk finishes choice 0, the only choice in it, and has no content key
    at all: nothing in it for the gate."""
    if raw.find(b'"content"') >= 0 or not _choice_zero_only(raw):
        return False
    at = raw.find(b'"finish_reason"')
    value = _value_at(raw, at + 15) if at >= 0 else -1
    return value >= 0 and raw[value : value + 1] == b'"'  # a reason, not null


def _string_end(raw: bytes, quote: int) -> int:
    """Where the JSON string opened at ``quote`` closes (a quote not escaped), or -1."""
    at = quote + 1
    while (close := raw.find(b'"', at)) >= 0:
        slashes = 0
        while raw[close - 1 - slashes] == 92:  # "\\"
            slashes += 1
        if slashes % 2 == 0:
            return close
        at = close + 1
    return -1


def _head(raw: bytes) -> dict[str, Any]:
    """id, created and model of a chunk, for a chunk of our own."""
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return {k: data.get(k) for k in ("id", "created", "model")} if isinstance(data, dict) else {}


class AnthropicStreamGuard:
    """The gate applied to an Anthropic upstream's own events (``text_delta``s),
    per content block. Batches hold whole events (the relay frames them so)."""

    def __init__(self, rules: Rules) -> None:
        self._rules = rules
        self.gates: dict[int, TextGate] = {}
        self._blocked_sent = False

    def hits(self) -> list[tuple[str, str]]:
        return _hits(self.gates)

    def __call__(self, batch: Batch) -> None:
        parts: list[Chunk | bytes] = []
        for part in batch.parts:
            if not isinstance(part, bytes):
                parts.append(part)
                continue
            for block in _BLOCK_END.split(part):
                if block.strip():
                    parts.append(self._event(block))
        batch.parts = parts

    def _event(self, block: bytes) -> bytes:
        name, data = _parse(block)
        kind = data.get("type") if isinstance(data, dict) else None
        if not isinstance(data, dict) or kind not in (
            "content_block_delta",
            "content_block_stop",
            "message_delta",
        ):
            return block + b"\n\n"
        index = data.get("index", 0) if isinstance(data.get("index"), int) else 0
        if kind == "message_delta":
            delta = data.get("delta")
            if self._blocked_sent and isinstance(delta, dict):
                delta["stop_reason"] = "refusal"
                return _encode(name, data)
            return block + b"\n\n"
        gate = self.gates.get(index)
        if kind == "content_block_stop":
            if gate is None or self._blocked_sent:
                return block + b"\n\n"
            text = gate.flush()
            if gate.blocked is not None:
                text, self._blocked_sent = withheld(gate.blocked), True
            if not text:
                return block + b"\n\n"
            delta_event = {"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": text}}  # fmt: skip
            return _encode(b"content_block_delta", delta_event) + block + b"\n\n"
        delta = data.get("delta")
        if not isinstance(delta, dict) or delta.get("type") != "text_delta":
            return block + b"\n\n"
        if gate is None:
            gate = self.gates[index] = TextGate(self._rules)
        given = delta.get("text")
        text = given if isinstance(given, str) else ""
        if self._blocked_sent:  # the answer was withheld: no more of its text
            out = ""
        else:
            out = gate.feed(text)
            if gate.blocked is not None:
                out, self._blocked_sent = withheld(gate.blocked), True
        if out == text:
            return block + b"\n\n"
        delta["text"] = out
        return _encode(name, data)


def _hits(gates: dict[int, TextGate]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for gate in gates.values():
        out += [hit for hit in gate.hits if hit not in out]
    return out


def _parse(block: bytes) -> tuple[bytes, Any]:
    name, data = b"", []
    for line in block.splitlines():
        if line.startswith(b"event:"):
            name = line[6:].strip()
        elif line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
    try:
        return name, json.loads(b"\n".join(data)) if data else None
    except (ValueError, RecursionError):
        return name, None


def _encode(name: bytes, data: dict[str, Any]) -> bytes:
    head = b"event: " + name + b"\n" if name else b""
    return head + b"data: " + dumpb(data) + b"\n\n"
