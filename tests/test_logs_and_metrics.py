"""What operators see: one access line per request, metrics, and no secret anywhere."""

from __future__ import annotations

import asyncio
import io
import json
import math
import uuid

import aiohttp
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from aigateway.accesslog import AccessLog, LineSink, RequestLine
from tests.conftest import KEY, PROVIDER_SECRET, GatewayFactory
from tests.fakes import Reply, chunk_events, error_body

PROMPT = "my very private prompt text"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]


def access_lines(log: str) -> list[dict]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "request"]


async def test_access_log_and_secret_hygiene(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.upstream.script += [
        Reply(401, error_body(f"Incorrect API key provided: {PROVIDER_SECRET}")),
        Reply(400, error_body(f"bad request, your key {PROVIDER_SECRET} is fine")),
        Reply(
            events=[
                chunk_events()[0],
                {"error": {"message": f"failed with key {PROVIDER_SECRET}"}},
            ],
            pause=0.2,
        ),
    ]
    bodies = []
    async with aiohttp.ClientSession() as s:
        for body in [
            {"model": "gpt-4o", "messages": MESSAGES},
            {"model": "gpt-4o", "messages": MESSAGES},
            {"model": "gpt-4o", "messages": MESSAGES, "stream": True},
            {"model": "gpt-4o", "messages": MESSAGES},
        ]:
            async with s.post(
                gw.url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
            ) as resp:
                bodies.append((resp.status, await resp.text(), dict(resp.headers)))
    assert [b[0] for b in bodies] == [502, 400, 200, 200]
    async with aiohttp.ClientSession() as s, s.get(gw.root + "/metrics") as resp:
        metrics_text = await resp.text()
    log = gw.log.getvalue()
    everything = log + metrics_text + json.dumps(bodies)
    for secret in (PROVIDER_SECRET, PROVIDER_SECRET[-12:], KEY, KEY[-12:], PROMPT):
        assert secret not in everything, secret
    lines = access_lines(log)
    assert [line["status"] for line in lines] == [502, 400, 502, 200]
    last = lines[-1]
    assert last["key_id"] == "acme-key" and last["project"] == "acme"
    assert last["route"] == "gpt-4o" and last["provider"] == "up"
    assert last["prompt_tokens"] == 10 and last["completion_tokens"] == 2
    assert last["attempts"] == 1
    assert last["latency_ms"] >= last["overhead_ms"] >= 0
    streamed = lines[2]
    assert streamed["stream"] is True and streamed["error_class"] == "UpstreamProtocolError"


async def test_client_disconnect_mid_stream_is_logged_and_upstream_released(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    gate = asyncio.Event()
    gw.upstream.script.append(Reply(events=chunk_events(), gate=gate))
    async with aiohttp.ClientSession() as s:
        resp = await s.post(
            gw.url + "/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        assert first.startswith(b"data: ")
        resp.close()  # the caller goes away mid-stream
    for _ in range(100):
        if access_lines(gw.log.getvalue()):
            break
        await asyncio.sleep(0.02)
    gate.set()
    lines = access_lines(gw.log.getvalue())
    assert len(lines) == 1
    assert lines[0]["status"] == 499 and lines[0]["error_class"] == "ClientClosed"
    assert lines[0]["ttfb_ms"] is not None
    # The gateway kept serving.
    async with AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)


def samples(text: str, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_metric_series_stay_bounded_whatever_clients_send(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    async with aiohttp.ClientSession() as s:

        async def scrape() -> str:
            async with s.get(gw.root + "/metrics") as resp:
                return await resp.text()

        async def send(model: str, key: str) -> int:
            async with s.post(
                gw.url + "/chat/completions",
                json={"model": model, "messages": MESSAGES},
                headers={"Authorization": f"Bearer {key}"},
            ) as resp:
                return resp.status

        assert await send("gpt-4o", KEY) == 200
        # One request of each kind creates its series ...
        assert await send("m-warmup", KEY) == 404
        assert await send("gpt-4o", "aig-unknown") == 401
        before = await scrape()
        # ... and 10,000 more with random model names and keys create none.
        for batch in range(200):
            statuses = await asyncio.gather(
                *(
                    send(f"m-{uuid.uuid4()}", KEY if i % 2 else f"aig-{uuid.uuid4()}")
                    for i in range(batch * 50, batch * 50 + 50)
                )
            )
            assert set(statuses) <= {401, 404}
        after = await scrape()

    def series(text: str) -> set[tuple]:
        return {
            (s.name, tuple(sorted(s.labels.items())))
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    assert series(after) == series(before)
    requests = samples(after, "aigateway_requests_total")
    assert (
        requests[
            (
                ("key", "acme-key"),
                ("project", "acme"),
                ("provider", "-"),
                ("route", "-"),
                ("status", "4xx"),
            )
        ]
        == 5001
    )
    assert (
        requests[
            (("key", "-"), ("project", "-"), ("provider", "-"), ("route", "-"), ("status", "4xx"))
        ]
        == 5001
    )
    assert (
        requests[
            (
                ("key", "acme-key"),
                ("project", "acme"),
                ("provider", "up"),
                ("route", "gpt-4o"),
                ("status", "2xx"),
            )
        ]
        == 1
    )
    tokens = samples(after, "aigateway_tokens_total")
    assert (
        tokens[(("project", "acme"), ("provider", "up"), ("route", "gpt-4o"), ("type", "input"))]
        == 10
    )
    assert "m-warmup" not in after and "aig-" not in after


async def test_metrics_token_and_genai_names(make_gateway: GatewayFactory) -> None:
    from aigateway.keys import digest

    token = "scrape-token-0123456789"
    gw = await make_gateway(
        edit=lambda t: t.replace(
            "providers:\n", f'server: {{metrics_token_sha256: "{digest(token)}"}}\nproviders:\n', 1
        )
    )
    async with AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        for _ in range(2):
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.root + "/metrics") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "invalid_api_key"
        async with s.get(gw.root + "/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
            text = await r.text()
    labels = (
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "up"),
        ("gen_ai_request_model", "gpt-4o"),
    )
    tokens = samples(text, "gen_ai_client_token_usage_count")
    assert tokens[tuple(sorted((*labels, ("gen_ai_token_type", "input"))))] == 3
    assert samples(text, "gen_ai_server_request_duration_seconds_count")[labels] == 3
    assert samples(text, "gen_ai_server_time_to_first_token_seconds_count")[labels] == 1
    assert samples(text, "aigateway_time_to_first_token_seconds_count")[(("route", "gpt-4o"),)] == 1


async def test_every_log_line_of_a_request_carries_its_id(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()  # 127.0.0.1 upstreams are unpriced: a warning inside the request
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.url + "/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {KEY}", "x-request-id": "trace-me-123"},
        ) as resp,
    ):
        assert resp.status == 200
    lines = [json.loads(x) for x in gw.log.getvalue().splitlines() if x.startswith("{")]
    warning = next(x for x in lines if "no price" in x["event"])
    assert warning["request_id"] == "trace-me-123"


_LINE = RequestLine(
    "rid", "chat", "k1", "p", "r", "prov", "gpt-4o", True, 200, None, 1, 1.25, 0.125, 0.5,
    12, 20, "provider", 0.00023,
)  # fmt: skip


@pytest.mark.parametrize(
    "line",
    [
        _LINE,
        _LINE._replace(key_id=None, project=None, route=None, provider=None, model=None),
        _LINE._replace(stream=False, status=499, error_class="ClientClosed", ttfb_ms=None),
        _LINE._replace(prompt_tokens=None, completion_tokens=None, usage_source=None),
        _LINE._replace(cost_usd=None, latency_ms=1e-7, overhead_ms=0.0, attempts=0),
        _LINE._replace(model='quo"te \\ back \n nl \u2028 é 中 \U0001f600', route="r\x00"),
        _LINE._replace(cost_usd=float("nan"), latency_ms=float("inf"), prompt_tokens=10**30),
    ],
)
def test_access_line_is_what_json_dumps_writes(line: RequestLine) -> None:
    sink = io.StringIO()
    AccessLog(LineSink(sink)).write(line)
    text = sink.getvalue()
    fields = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in line._asdict().items()
    }
    stamp = json.loads(text)["timestamp"]
    want = {**fields, "event": "request", "level": "info", "timestamp": stamp}
    assert text == json.dumps(want, ensure_ascii=False) + "\n"


def test_access_line_as_text() -> None:
    sink = io.StringIO()
    AccessLog(LineSink(sink), fmt="console").write(_LINE._replace(error_class=None, ttfb_ms=None))
    text = sink.getvalue()
    assert text.endswith("Z [info     ] request request_id=rid endpoint=chat key_id=k1 project=p "
                         "route=r provider=prov model=gpt-4o stream=True status=200 attempts=1 "
                         "latency_ms=1.25 overhead_ms=0.125 prompt_tokens=12 completion_tokens=20 "
                         "usage_source=provider cost_usd=0.00023\n")  # fmt: skip
