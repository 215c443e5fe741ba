"""Hot reload: file edits (in place, by rename, ConfigMap symlink swap), the admin API,
invalid files, revoked keys, and requests in flight while the config changes."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from aigateway.app import create_app
from aigateway.config.load import load_config
from aigateway.keys import digest
from aigateway.metrics import Metrics
from aigateway.observability import configure_logging

KEY = "aig-reload-key-0123456789"
KEY2 = "aig-reload-key2-0123456789"
ADMIN = "aig-admin-key-0123456789"


def config(
    *,
    routes: tuple[str, ...] = ("fast",),
    keys: tuple[str, ...] = (KEY,),
    reply: str = "one",
    port: int = 8080,
    chunk_delay_ms: int = 0,
    extra: str = "",
) -> str:
    key_lines = "\n".join(
        f'  - {{id: k{i}, project: p, sha256: "{digest(k)}"}}' for i, k in enumerate(keys)
    )
    route_lines = "\n".join(
        f"  {r}: {{targets: [{{provider: demo, model: m-{r}}}]}}" for r in routes
    )
    return (
        textwrap.dedent(f"""\
        version: 1
        server: {{port: {port}}}
        admin: {{key_sha256: "{digest(ADMIN)}"}}
        providers:
          demo: {{type: mock, reply: "{reply}", stream_chunks: 5, chunk_delay_ms: {chunk_delay_ms}}}
        models:
        """)
        + route_lines
        + "\nprojects:\n  p: {}\nkeys:\n"
        + key_lines
        + "\n"
        + extra
    )


class Live:
    def __init__(self, server: TestServer, path: Path, log: object, metrics: Metrics) -> None:
        self.server, self.path, self.log, self.metrics = server, path, log, metrics

    @property
    def url(self) -> str:
        return str(self.server.make_url(""))

    def write(self, text: str, how: str = "in_place") -> None:
        """Change the config the way an operator or Kubernetes would."""
        if how == "in_place":
            self.path.write_text(text)
        elif how == "rename":
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path)
        elif how == "configmap":
            directory = self.path.parent
            version = directory / f"..{time.monotonic_ns()}"
            version.mkdir()
            (version / "gateway.yaml").write_text(text)
            old = (directory / "..data").resolve()
            tmp_link = directory / "..data_tmp"
            tmp_link.symlink_to(version.name)
            os.replace(tmp_link, directory / "..data")
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
        else:
            raise AssertionError(how)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Live]]]:
    servers: list[TestServer] = []

    async def start(text: str, *, configmap: bool = False, watch: bool = True) -> Live:
        directory = tmp_path / "conf"
        directory.mkdir()
        path = directory / "gateway.yaml"
        if configmap:  # the layout kubelet makes for a ConfigMap volume
            (directory / "..v0").mkdir()
            (directory / "..v0" / "gateway.yaml").write_text(text)
            (directory / "..data").symlink_to("..v0")
            path.symlink_to("..data/gateway.yaml")
        else:
            path.write_text(text)
        import io

        log = io.StringIO()
        access_log = configure_logging(stream=log)
        metrics = Metrics()
        app = create_app(
            load_config(path, os.environ),
            metrics=metrics,
            access_log=access_log,
            config_path=str(path),
            watch=watch,
        )
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Live(server, path, log, metrics)

    yield start
    for server in servers:
        await server.close()


async def models(s: aiohttp.ClientSession, live: Live, key: str = KEY) -> tuple[int, list[str]]:
    async with s.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}) as r:
        body = await r.json()
        return r.status, sorted(m["id"] for m in body.get("data", []))


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 2.0) -> float:
    """Poll until ``check()`` holds; returns how long it took. Bounded in time."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within_s} s")


@pytest.mark.parametrize("how", ["in_place", "rename", "configmap"])
async def test_a_valid_change_is_live_within_two_seconds(live, how: str) -> None:
    gw = await live(config(), configmap=how == "configmap")
    async with aiohttp.ClientSession() as s:
        assert await models(s, gw) == (200, ["fast"])
        for i in range(3):
            routes = ("fast", f"new-{i}")
            gw.write(config(routes=routes), how)

            async def visible(routes: tuple[str, ...] = routes) -> bool:
                return await models(s, gw) == (200, sorted(routes))

            await eventually(visible)


async def test_an_invalid_file_leaves_the_old_config_serving(live) -> None:
    gw = await live(config())
    async with aiohttp.ClientSession() as s:
        gw.write(config().replace("provider: demo", "provider: dmeo"))
        await asyncio.sleep(0.6)
        assert await models(s, gw) == (200, ["fast"])
        async with s.post(
            gw.url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as r:
            result = await r.json()
        assert result["ok"] is False
        assert any(
            "models.fast.targets[0].provider" in e and "unknown provider 'dmeo'" in e
            for e in result["errors"]
        )
        assert result["config_sha256"] == load_config_digest(config())
        async with s.get(gw.url + "/metrics") as r:
            text = await r.text()
    failures = {
        tuple(x.labels.items()): x.value
        for f in text_string_to_metric_families(text)
        for x in f.samples
        if x.name == "aigateway_config_reloads_total"
    }
    assert failures[(("result", "failure"),)] >= 1
    log = [json.loads(line) for line in gw.log.getvalue().splitlines()]
    rejected = [line for line in log if line["event"].startswith("config reload rejected")]
    assert rejected and "unknown provider 'dmeo'" in json.dumps(rejected[0]["errors"])


def load_config_digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


async def test_a_revoked_key_is_refused_within_two_seconds(live) -> None:
    gw = await live(config(keys=(KEY, KEY2)))
    async with aiohttp.ClientSession() as s:
        assert (await models(s, gw, KEY2))[0] == 200
        gw.write(config(keys=(KEY,)))

        async def refused() -> bool:
            return (await models(s, gw, KEY2))[0] == 401

        await eventually(refused)
        assert (await models(s, gw, KEY))[0] == 200


async def test_admin_reload_reports_the_diff_and_static_fields(live) -> None:
    gw = await live(config(), watch=False)
    async with aiohttp.ClientSession() as s:
        gw.write(config(routes=("fast", "best"), port=9999, reply="two"))
        async with s.post(
            gw.url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as r:
            assert r.status == 200
            result = await r.json()
        assert result["ok"] and result["changed"] and result["trigger"] == "admin"
        assert result["diff"]["models"] == {"added": ["best"]}
        assert result["diff"]["providers"] == {"changed": ["demo"]}
        assert result["restart_needed"] == ["server.port"]
        async with s.get(
            gw.url + "/admin/config", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as r:
            effective = await r.json()
        assert effective["config"]["server"]["port"] == 8080  # not half-applied
        assert sorted(effective["config"]["models"]) == ["best", "fast"]
        async with s.post(
            gw.url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as r:
            again = await r.json()
        assert again["ok"] and not again["changed"]


async def test_requests_in_flight_survive_twenty_rewrites(live) -> None:
    """200 requests (half streaming) in flight and more arriving while the file is
    rewritten 20 times, in place, by rename and by ConfigMap swap: none fails, and
    each is answered by the config it started under."""
    gw = await live(config(reply="v0", chunk_delay_ms=20), configmap=True)
    results: list[tuple[bool, str]] = []

    async def one(s: aiohttp.ClientSession, stream: bool) -> None:
        body = {"model": "fast", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        async with s.post(
            gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
        ) as r:
            text = await r.text()
            if r.status != 200:
                results.append((False, f"status {r.status}: {text[:200]}"))
            elif stream:
                ok = text.endswith("data: [DONE]\n\n")
                words = {
                    json.loads(e[6:])["choices"][0]["delta"].get("content", "").strip()
                    for e in text.split("\n\n")
                    if e.startswith("data: {")
                }
                results.append((ok and len(words - {""}) == 1, text[-200:]))
            else:
                results.append((True, json.loads(text)["choices"][0]["message"]["content"]))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        first = [asyncio.ensure_future(one(s, i % 2 == 0)) for i in range(200)]
        more: list[asyncio.Future[None]] = []
        for i in range(1, 21):
            # A ConfigMap volume is only ever updated by swapping ..data.
            gw.write(config(reply=f"v{i}", chunk_delay_ms=20), "configmap")
            more += [asyncio.ensure_future(one(s, j % 2 == 0)) for j in range(10)]
            await asyncio.sleep(0.1)
        await asyncio.wait_for(asyncio.gather(*first, *more), 60)
    failed = [detail for ok, detail in results if not ok]
    assert not failed, failed[:5]
    assert len(results) == 400
    async with aiohttp.ClientSession() as s:

        async def latest() -> bool:
            async with s.post(
                gw.url + "/v1/chat/completions",
                json={"model": "fast", "messages": [{"role": "user", "content": "x"}]},
                headers={"Authorization": f"Bearer {KEY}"},
            ) as r:
                answer: str = (await r.json())["choices"][0]["message"]["content"]
                return answer == "v20"

        await eventually(latest)


async def test_routing_state_survives_a_reload_for_unchanged_targets(live) -> None:
    text = config(extra="").replace(
        "models:\n",
        "  broken: {type: mock, error_rate: 1.0, error_status: 503}\nmodels:\n"
        "  guarded:\n    circuit_breaker: {failures: 2, window_s: 60, cooldown_s: 60}\n"
        "    targets: [{provider: broken, model: b}, {provider: demo, model: d}]\n",
        1,
    )
    gw = await live(text, watch=False)

    async def circuit() -> float:
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/metrics") as r:
            metrics = await r.text()
        return next(
            x.value
            for f in text_string_to_metric_families(metrics)
            for x in f.samples
            if x.name == "aigateway_circuit_state" and x.labels["provider"] == "broken"
        )

    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.post(
                gw.url + "/v1/chat/completions",
                json={"model": "guarded", "messages": [{"role": "user", "content": "x"}]},
                headers={"Authorization": f"Bearer {KEY}"},
            ) as r:
                assert r.status == 200
        assert await circuit() == 2.0  # open
        gw.write(text.replace('reply: "one"', 'reply: "two"'))  # another provider changes
        async with s.post(
            gw.url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as r:
            assert (await r.json())["changed"]
    assert await circuit() == 2.0  # still open: the broken target did not change


async def test_each_request_is_priced_by_the_config_it_started_under(live) -> None:
    def priced(rate: int) -> str:
        return config(
            chunk_delay_ms=100,
            extra=(
                f'pricing:\n  "demo/m-fast": {{input_per_mtok: {rate}, output_per_mtok: {rate}}}\n'
            ),
        )

    gw = await live(priced(1), watch=False)
    body = {"model": "fast", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
        ) as r:
            first = await r.content.readuntil(b"\n\n")  # the stream is under way ...
            gw.write(priced(1000))
            async with s.post(
                gw.url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as reload:
                assert (await reload.json())["changed"]  # ... when the price changes
            rest = await r.read()
        assert first.startswith(b"data: ") and rest.endswith(b"data: [DONE]\n\n")
        async with s.post(
            gw.url + "/v1/chat/completions",
            json={**body, "stream": False},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as r:
            assert r.status == 200
    lines = [json.loads(x) for x in gw.log.getvalue().splitlines()]
    old, new = [x for x in lines if x["event"] == "request"]
    tokens = old["prompt_tokens"] + old["completion_tokens"]
    assert old["cost_usd"] == pytest.approx(tokens * 1 / 1_000_000)
    assert new["cost_usd"] == pytest.approx(
        (new["prompt_tokens"] + new["completion_tokens"]) * 1000 / 1_000_000
    )


async def test_limit_counters_survive_a_reload(live) -> None:
    def limited(rpm: int, reply: str) -> str:
        return config(reply=reply).replace("  p: {}", f"  p: {{rate_limits: {{rpm: {rpm}}}}}")

    gw = await live(limited(3, "one"), watch=False)
    async with aiohttp.ClientSession() as s:

        async def remaining() -> tuple[str, str]:
            async with s.post(
                gw.url + "/v1/chat/completions",
                json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {KEY}"},
            ) as r:
                body = await r.json()
                reply = body["choices"][0]["message"]["content"]
                return reply, r.headers["x-ratelimit-remaining-requests"]

        assert [await remaining() for _ in range(2)] == [("one", "2"), ("one", "1")]
        gw.write(limited(5, "two"))  # the limit is raised; the project is the same
        async with s.post(gw.url + "/admin/reload", headers={"x-api-key": ADMIN}) as r:
            assert r.status == 200
        # what was counted before the reload still counts: 5 - 3 = 2 left
        assert await remaining() == ("two", "2")


@pytest.mark.parametrize(
    ("changed", "acted_on"),
    [
        ("/etc/aigateway/gateway.yaml", True),
        ("/etc/aigateway/..data", True),  # a ConfigMap update
        ("/etc/aigateway/gateway.yaml.swp", False),  # an editor's own file
        ("/etc/aigateway/prompts.sqlite-wal", False),  # written next to the config
        ("/etc/aigateway/aigateway.log", False),
    ],
)
def test_only_changes_that_may_touch_the_config_are_acted_on(changed: str, acted_on: bool) -> None:
    from watchfiles import Change

    from aigateway.config.watch import concerns

    assert concerns(Path("/etc/aigateway/gateway.yaml"))(Change.modified, changed) is acted_on


async def test_a_reload_that_brings_a_price_source_prices_by_it(live) -> None:
    free = config().replace("model: m-fast", "model: gpt-4o-mini")
    gw = await live(free, watch=False)
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/chat/completions", json=body, headers=headers) as r:
            assert r.headers["x-aigateway-cost-usd"] == "0"  # the mock is free
        gw.write(free.replace("type: mock,", "type: mock, price_as: openai,"))
        async with s.post(
            gw.url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as reload:
            assert (await reload.json())["changed"]
        async with s.post(gw.url + "/v1/chat/completions", json=body, headers=headers) as r:
            cost = r.headers["x-aigateway-cost-usd"]
    last = [json.loads(x) for x in gw.log.getvalue().splitlines() if '"request"' in x][-1]
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens
    expected = (last["prompt_tokens"] * 0.15 + last["completion_tokens"] * 0.6) / 1_000_000
    assert float(cost) == pytest.approx(expected) and expected > 0
