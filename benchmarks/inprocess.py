"""The gateway's own CPU per request, without sockets: the pipeline in one process.

The benchmark's config (``run.gateway_conf``) is built into a runtime whose
transport answers at once with the canned JSON and SSE bodies nginx serves in
``run.py`` (a stream arrives in one read, as from nginx). Each request goes
through the whole chain, and a stream's batches through the hooks and the
encoding the HTTP handler applies, so what is left out is aiohttp's server and
client and the kernel. Prints microseconds per request (wall and CPU, the best
of ``--rounds``) for each scenario; compare builds by running it with each
interpreter. ``logged`` runs 32 requests at a time (its rows commit in batches);
``semantic`` asks a new question each time, each a semantic-cache hit after the
warm-up (an embedding call to the canned 1,536-float embedding, then the lookup).

    python benchmarks/inprocess.py [--kinds json,sse,governed] [--requests 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import structlog

from aigateway.accesslog import AccessLog, LineSink
from aigateway.cache_store import open_cache
from aigateway.config.load import parse_config
from aigateway.config.model import Timeouts
from aigateway.metrics import Metrics
from aigateway.pipeline import JsonReply, RequestContext
from aigateway.policy import token_needs
from aigateway.promptlog import PromptLog
from aigateway.providers.base import UpstreamRequest
from aigateway.routing import RoutingState
from aigateway.runtime import build_runtime
from aigateway.state_memory import MemoryStore
from aigateway.tasks import Tasks
from aigateway.tokens import Tokenizer
from aigateway.upstream import MAX_RESPONSE_BYTES, UpstreamResponse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.run import GOV_KEY, GUARD_KEY, KEY, canned, canned_embedding, gateway_conf

KINDS = ("json", "sse", "governed", "guarded", "guarded_sse", "logged", "semantic")
#: (route, key, streamed) of each scenario, as run.py sends them
SCENARIOS = {
    "json": ("bench-json", KEY, False),
    "sse": ("bench-sse", KEY, True),
    "governed": ("bench-json", GOV_KEY, False),
    "guarded": ("bench-json", GUARD_KEY, False),
    "guarded_sse": ("bench-sse", GUARD_KEY, True),
    "logged": ("bench-json", KEY, False),
    "semantic": ("bench-semantic", KEY, False),
}
CONCURRENT = 32


class _Canned:
    """An upstream response already in memory; a stream's events in one read."""

    def __init__(self, body: bytes, stream: bool) -> None:
        self.status = 200
        self.headers: Mapping[str, str] = {
            "content-type": "text/event-stream" if stream else "application/json"
        }
        self._body = body
        self._left = body

    async def read(self, limit: int = MAX_RESPONSE_BYTES) -> bytes:
        return self._body[:limit]

    async def read_chunk(self) -> bytes:
        out, self._left = self._left, b""
        return out

    def at_eof(self) -> bool:
        return not self._left

    def release(self) -> None:
        pass


class CannedTransport:
    def __init__(self) -> None:
        self._json, self._sse = canned(False).encode(), canned(True).encode()
        self._embedding = canned_embedding().encode()

    async def open(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamResponse:
        stream = "/sse/" in req.url
        if req.url.endswith("/embeddings"):
            return _Canned(self._embedding, False)
        return _Canned(self._sse if stream else self._json, stream)


async def measure(
    kind: str, requests: int, rounds: int, tokenizer: Tokenizer | None = None
) -> tuple[float, float]:
    """(wall, CPU) microseconds per request, the best round's."""
    route, key, stream = SCENARIOS[kind]
    text = gateway_conf("http://127.0.0.1:9")
    tmp = Path(tempfile.mkdtemp(prefix="aigw-inproc-"))
    if kind == "logged":
        log = f'prompt_log: {{path: "{tmp}/p.sqlite", mode: full, durability: strict}}\n'
        text = text.replace("providers:", log + "providers:", 1)
    loaded = parse_config(text.encode(), env={}, base_dir=tmp)
    tokenizer = tokenizer or Tokenizer()
    tokenizer.load(token_needs(loaded.config))
    tasks = Tasks(structlog.get_logger("benchmark"))
    prompt_log = None
    if loaded.config.prompt_log is not None:
        prompt_log = PromptLog(loaded.config.prompt_log, Metrics())
        await prompt_log.open(tasks.spawn)
    metrics = Metrics()
    cache, semantic = open_cache(loaded.config.cache, loaded.config.state, metrics)
    runtime = build_runtime(
        loaded,
        http=CannedTransport(),
        metrics=metrics,
        access_log=AccessLog(LineSink(io.StringIO())),
        routing=RoutingState(clock=time.monotonic),
        store=MemoryStore(),
        tokenizer=tokenizer,
        spawn=tasks.finish,
        prompt_log=prompt_log,
        cache=cache,
        semantic=semantic,
    )
    body = json.dumps(
        {
            "model": route,
            "stream": stream,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello twenty times."},
            ],
        }
    ).encode()
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}

    questions = itertools.count()
    measuring = False

    async def same_body() -> bytes:
        return body

    async def new_question() -> bytes:  # a semantic hit each time, never an exact one
        return body.replace(b"twenty times", b"%d times" % next(questions))

    read_body = new_question if kind == "semantic" else same_body

    async def one(i: int) -> None:
        ctx = RequestContext(f"req-{i}", "chat", headers, read_body)
        reply = await runtime.handler(ctx)
        if isinstance(reply, JsonReply):
            if reply.status != 200:
                raise RuntimeError(f"{kind}: status {reply.status}: {reply.body}")
            if kind == "semantic" and measuring and not ctx.cache_hit:
                raise RuntimeError("semantic: a request past the warm-up was not a hit")
        else:  # what the HTTP handler does with a stream
            while (batch := await reply.stream.next()) is not None:
                for hook in reply.on_batch:
                    hook(batch)
                batch.encode()
            await reply.stream.aclose()
            for end in reply.on_end:
                end(200, None)
            for wait in reply.before_tail:
                await wait()

    async def tasks_settle() -> None:
        for _ in range(10):  # the canned transport never waits: let background puts run
            await asyncio.sleep(0)

    async def run(n: int) -> None:
        async def worker(w: int) -> None:
            for i in range(n // width):
                await one(w * n + i)

        await asyncio.gather(*(worker(w) for w in range(width)))

    width = CONCURRENT if kind == "logged" else 1
    requests = max(width, requests - requests % width)  # whole batches of workers
    warm_up = min(2000, requests) // width * width
    if kind == "semantic":  # the first answer cached (in the background) before the rest
        await one(0)
        await tasks_settle()
    await run(warm_up)  # caches, pools, series
    measuring = True
    best = (float("inf"), float("inf"))
    try:
        for _ in range(rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            await run(requests)
            done = (time.perf_counter() - wall, time.process_time() - cpu)
            best = min(best, (done[0] / requests * 1e6, done[1] / requests * 1e6))
    finally:
        if prompt_log is not None:
            await prompt_log.close()
        await tasks.close()
    if prompt_log is not None:  # every request's row was committed
        with sqlite3.connect(prompt_log.path) as db:
            (rows,) = db.execute("SELECT count(*) FROM requests").fetchone()
        if rows != warm_up + rounds * requests:
            raise RuntimeError(f"logged: {rows} rows for {warm_up + rounds * requests}")
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--requests", type=int, default=5000, help="per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for kind in args.kinds.split(","):
        if kind not in SCENARIOS:
            print(f"unknown scenario {kind!r}: one of {', '.join(KINDS)}", file=sys.stderr)
            return 2
        wall, cpu = asyncio.run(measure(kind, args.requests, args.rounds))
        print(f"{kind:12} {wall:7.1f} µs/request wall  {cpu:7.1f} µs CPU", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
