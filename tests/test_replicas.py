"""Several gateway processes sharing one real Redis; Redis going away and coming back."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from aigateway import limits
from aigateway.keys import digest
from aigateway.tokens import Tokenizer
from tests.conftest import RedisServer, free_port
from tests.procs import serve, stop, wait_ready

BUDGET_KEY = "aig-replica-budget-0123456789"
RATE_KEY = "aig-replica-rate-0123456789"
MESSAGES = [{"role": "user", "content": "hello there, how are you today?"}]


def config(redis_url: str, prefix: str, extra_state: str = "") -> str:
    return textwrap.dedent(f"""\
        version: 1
        state: {{backend: redis, url: "{redis_url}", key_prefix: "{prefix}"{extra_state}}}
        providers:
          demo: {{type: mock, reply: "ok"}}
        models:
          m: {{targets: [{{provider: demo, model: m}}]}}
        pricing:
          "demo/m": {{input_per_mtok: 1000, output_per_mtok: 2000}}
        projects:
          spend: {{budgets: [{{window: total, usd: 0.5}}]}}
          rate: {{rate_limits: {{rpm: 200}}}}
        keys:
          - {{id: b, project: spend, sha256: "{digest(BUDGET_KEY)}"}}
          - {{id: r, project: rate, sha256: "{digest(RATE_KEY)}"}}
        """)


async def call(http: aiohttp.ClientSession, url: str, key: str) -> tuple[int, str]:
    async with http.post(
        url + "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, "max_tokens": 2},
        headers={"authorization": f"Bearer {key}"},
    ) as resp:
        body = await resp.json()
        return resp.status, "ok" if resp.status == 200 else body["error"]["code"]


async def spent_nano(redis_url: str, prefix: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        value = await client.hget(f"{{{prefix}}}:q:p:spend:total:total:usd", "spent")
    finally:
        await client.aclose()
    return int(value or 0)


@pytest.mark.slow
async def test_three_replicas_share_one_budget_and_one_rate_limit(
    tmp_path: Path, redis_server: RedisServer, tokenizer: Tokenizer
) -> None:
    prefix = f"rep-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "gateway.yaml"
    path.write_text(config(redis_server.url, prefix))
    ports = [free_port() for _ in range(3)]
    procs = [serve(path, port) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, proc in zip(urls, procs, strict=True):
            await wait_ready(url, proc)
        async with aiohttp.ClientSession() as http:
            # 300 requests spread over the replicas against a budget for fewer
            budget = await asyncio.gather(
                *(call(http, urls[i % 3], BUDGET_KEY) for i in range(300))
            )
            codes = {code for _, code in budget}
            assert codes <= {"ok", "insufficient_quota"}, codes
            # 300 requests against 200 per minute, all replicas together
            rate = await asyncio.gather(*(call(http, urls[i % 3], RATE_KEY) for i in range(300)))
            ok_rate = sum(1 for status, _ in rate if status == 200)
            assert 200 <= ok_rate <= 202  # within 1 %
            assert {code for status, code in rate if status != 200} == {"rate_limit_exceeded"}
            # settled spend never passes the budget, and the last refusal is real:
            # what is left cannot pay for one more worst case
            prompt = tokenizer.chat_prompt({"messages": MESSAGES}, ["m"])
            worst = prompt * 1_000_000 + 2 * 2_000_000
            for _ in range(300):
                if (await call(http, urls[0], BUDGET_KEY))[1] != "ok":
                    break
            spent = await spent_nano(redis_server.url, prefix)
            assert 0 < spent <= limits.to_nano(Decimal("0.5"))
            assert limits.to_nano(Decimal("0.5")) - spent < worst
        # a replica restarted mid-run starts from the shared spend, not from zero
        stop(procs[0])
        procs[0] = serve(path, ports[0])
        await wait_ready(urls[0], procs[0])
        async with aiohttp.ClientSession() as http:
            assert await call(http, urls[0], BUDGET_KEY) == (429, "insufficient_quota")
    finally:
        for proc in procs:
            stop(proc)


# --- Redis killed and restarted --------------------------------------------------------


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    return subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def own_redis(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[int, list]]:
    """A Redis of this test's own, which it may kill and restart (by PID)."""
    del redis_server  # required: in CI a missing Redis fails instead of skipping
    port = free_port()
    procs = [start_redis(port, tmp_path)]
    yield port, procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


async def wait_for_redis(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("redis did not start")


@pytest.mark.slow
async def test_redis_killed_and_restarted(tmp_path: Path, own_redis: tuple[int, list]) -> None:
    port, redis_procs = own_redis
    await wait_for_redis(port)
    path = tmp_path / "gateway.yaml"
    path.write_text(config(f"redis://127.0.0.1:{port}/0", "outage", ", timeout_s: 0.2"))
    gw_port = free_port()
    proc = serve(path, gw_port)
    url = f"http://127.0.0.1:{gw_port}"
    try:
        await wait_ready(url, proc)
        async with aiohttp.ClientSession() as http:
            assert await call(http, url, BUDGET_KEY) == (200, "ok")
            assert await call(http, url, RATE_KEY) == (200, "ok")
            redis_procs[0].kill()
            redis_procs[0].wait(timeout=10)
            # budgets fail closed, rate limits fall back to this replica's own count
            assert await call(http, url, BUDGET_KEY) == (503, "limits_unavailable")
            assert await call(http, url, RATE_KEY) == (200, "ok")
            redis_procs.append(start_redis(port, tmp_path))
            await wait_for_redis(port)
            # back to normal by itself (the scripts are loaded again: NOSCRIPT)
            deadline = time.monotonic() + 10
            while (await call(http, url, BUDGET_KEY))[0] != 200:
                assert time.monotonic() < deadline, "did not recover"
                await asyncio.sleep(0.1)
            async with http.get(url + "/metrics") as resp:
                text = await resp.text()
        assert 'aigateway_state_errors_total{fallback="deny",operation="admit"}' in text
        assert 'aigateway_state_errors_total{fallback="local",operation="admit"}' in text
    finally:
        out = stop(proc)
    assert "state_unavailable" in out  # logged, with no secret: the URL is not in it
    assert "redis://" not in out
