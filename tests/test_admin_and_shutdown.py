"""The admin API's guard and redaction; SIGTERM drains open streams; SIGHUP reloads."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from aigateway import logread
from aigateway.keys import digest
from aigateway.promptlog import log_files
from tests.conftest import PROVIDER_SECRET, GatewayFactory, free_port
from tests.procs import serve, stop, wait_ready

ADMIN = "aig-admin-key-0123456789"


async def test_admin_is_off_without_a_digest(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with aiohttp.ClientSession() as s:
        for method, path in [
            ("POST", "/admin/reload"),
            ("GET", "/admin/config"),
            ("GET", "/admin/health"),
        ]:
            async with s.request(
                method, gw.root + path, headers={"Authorization": f"Bearer {ADMIN}"}
            ) as r:
                assert r.status == 404
                assert (await r.json())["error"]["code"] == "not_found"


async def test_admin_needs_the_admin_key_and_redacts_secrets(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(extra=f'admin: {{key_sha256: "{digest(ADMIN)}"}}\n')
    async with aiohttp.ClientSession() as s:
        for headers in [
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": "Bearer aig-test-key-0123456789abcdef"},
        ]:
            async with s.get(gw.root + "/admin/config", headers=headers) as r:
                assert r.status == 401
        async with s.get(
            gw.root + "/admin/config", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as r:
            assert r.status == 200
            text = await r.text()
        body = json.loads(text)
        assert body["config"]["providers"]["up"]["api_key"] == "**********"
        assert PROVIDER_SECRET not in text and PROVIDER_SECRET[-8:] not in text
        assert len(body["config_sha256"]) == 64
        async with s.get(gw.root + "/admin/health", headers={"x-api-key": ADMIN}) as r:
            health = await r.json()
        assert health["ready"] is True and health["config_sha256"] == body["config_sha256"]
        assert health["in_flight_requests"] == 0
        # Not started from a file: nothing to reload.
        async with s.post(
            gw.root + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as r:
            assert r.status == 404


CONFIG = textwrap.dedent(f"""\
    version: 1
    server: {{shutdown_grace_s: 10}}
    providers:
      demo: {{type: mock, reply: "REPLY", stream_chunks: 20, chunk_delay_ms: 50}}
    models:
      fast: {{targets: [{{provider: demo, model: m}}]}}
    projects: {{p: {{}}}}
    keys:
      - {{id: k, project: p, sha256: "{digest("aig-shutdown-key-0123")}"}}
    """)


@pytest.mark.slow
async def test_sigterm_lets_fifty_open_streams_finish(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    log_path = tmp_path / "prompts.sqlite"
    path.write_text(
        CONFIG.replace("REPLY", " ".join(f"w{i}" for i in range(40))).replace(
            "providers:", f'prompt_log: {{path: "{log_path}"}}\nproviders:'
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(path, port)
    try:
        await wait_ready(url, proc)
        first_chunk = asyncio.Semaphore(0)

        async def stream(s: aiohttp.ClientSession) -> str:
            async with s.post(
                url + "/v1/chat/completions",
                json={
                    "model": "fast",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                headers={"Authorization": "Bearer aig-shutdown-key-0123"},
            ) as r:
                assert r.status == 200
                body = await r.content.readuntil(b"\n\n")
                first_chunk.release()
                return (body + await r.read()).decode()

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            tasks = [asyncio.ensure_future(stream(s)) for _ in range(50)]
            for _ in range(50):
                await asyncio.wait_for(first_chunk.acquire(), 10)
            proc.send_signal(signal.SIGTERM)
            bodies = await asyncio.wait_for(asyncio.gather(*tasks), 15)
            # New connections are refused once the listener has closed.
            await asyncio.sleep(0.2)
            with pytest.raises(aiohttp.ClientConnectionError):
                async with s.get(url + "/readyz"):
                    pass
        assert all(b.endswith("data: [DONE]\n\n") for b in bodies)
        assert proc.wait(timeout=15) == 0
        # the prompt log was flushed: a row for each of the 50, and the chain is whole
        rows = list(logread.rows(log_files(log_path)))
        assert len(rows) == 50 and {r["status"] for r in rows} == {200}
        assert logread.verify(log_files(log_path)).ok
    finally:
        out = stop(proc)
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    requests = [x for x in lines if x["event"] == "request"]
    assert len(requests) == 50 and all(x["status"] == 200 for x in requests)
    assert any(x["event"].startswith("shutting down") for x in lines)


@pytest.mark.slow
async def test_sighup_reloads(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(path, port, "--no-watch")
    try:
        await wait_ready(url, proc)
        path.write_text(CONFIG.replace("fast:", "renamed:"))
        await asyncio.sleep(0.5)  # no watcher: nothing happens on its own
        headers = {"Authorization": "Bearer aig-shutdown-key-0123"}
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "/v1/models", headers=headers) as r:
                assert [m["id"] for m in (await r.json())["data"]] == ["fast"]
            os.kill(proc.pid, signal.SIGHUP)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                async with s.get(url + "/v1/models", headers=headers) as r:
                    if [m["id"] for m in (await r.json())["data"]] == ["renamed"]:
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("SIGHUP did not reload")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        out = stop(proc)
    reloaded = [json.loads(x) for x in out.splitlines() if '"config reloaded"' in x]
    assert reloaded[0]["trigger"] == "sighup"
    assert reloaded[0]["diff"]["models"] == {"added": ["renamed"], "removed": ["fast"]}


@pytest.mark.slow
async def test_sigkill_under_load_loses_no_row_of_a_delivered_response(tmp_path: Path) -> None:
    """Durability strict: a response's last byte leaves only after its row is committed,
    so whatever a client received in full is in the log, even after kill -9."""
    path = tmp_path / "gateway.yaml"
    log_path = tmp_path / "prompts.sqlite"
    path.write_text(
        CONFIG.replace("REPLY", "ok").replace(
            "providers:", f'prompt_log: {{path: "{log_path}", durability: strict}}\nproviders:'
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(path, port)
    delivered: list[str] = []
    try:
        await wait_ready(url, proc)

        async def client(s: aiohttp.ClientSession, stream: bool) -> None:
            for _ in range(200):  # bounded: the kill ends it much sooner
                try:
                    async with s.post(
                        url + "/v1/chat/completions",
                        json={
                            "model": "fast",
                            "stream": stream,
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                        headers={"Authorization": "Bearer aig-shutdown-key-0123"},
                    ) as r:
                        body = await r.read()
                        complete = (
                            body.endswith(b"data: [DONE]\n\n")
                            if stream
                            else (r.status == 200 and body.endswith(b"}"))
                        )
                        if complete:
                            delivered.append(r.headers["x-request-id"])
                except aiohttp.ClientError:
                    return

        async with aiohttp.ClientSession() as s:
            clients = [asyncio.ensure_future(client(s, i % 2 == 0)) for i in range(16)]
            deadline = time.monotonic() + 20
            while len(delivered) < 150 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            proc.kill()  # SIGKILL: no shutdown, no flush
            await asyncio.wait_for(asyncio.gather(*clients), 30)
    finally:
        stop(proc)
    logged = {r["request_id"] for r in logread.rows(log_files(log_path))}
    assert delivered and set(delivered) <= logged


@pytest.mark.slow
async def test_metrics_on_their_own_port(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    metrics_port = free_port()
    path.write_text(CONFIG.replace("shutdown_grace_s: 10", f"metrics_port: {metrics_port}"))
    port = free_port()
    proc = serve(path, port)
    try:
        await wait_ready(f"http://127.0.0.1:{port}", proc)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                assert r.status == 200
                assert "aigateway_in_flight_requests 0.0" in await r.text()
            async with s.get(f"http://127.0.0.1:{metrics_port}/v1/models") as r:
                assert r.status == 404  # only /metrics and /healthz there
    finally:
        stop(proc)
