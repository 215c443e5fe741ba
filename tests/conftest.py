from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from aigateway.app import create_app
from aigateway.config.load import parse_config
from aigateway.keys import digest
from aigateway.metrics import Metrics
from aigateway.observability import configure_logging
from aigateway.tokens import Tokenizer
from tests.fakes import FakeAnthropic, FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
KEY = "aig-test-key-0123456789abcdef"
OTHER_KEY = "aig-test-other-0123456789abcdef"
PROVIDER_SECRET = "sk-upstream-SECRET-0123456789abcdef"
ANTHROPIC_SECRET = "sk-ant-SECRET-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port nothing listens on, held for the test (bound, not listening):
    connecting is refused, and no other process can take it meanwhile (a port
    from ``free_port`` that nobody holds may be another test's server a moment
    later)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


@dataclass
class Gateway:
    server: TestServer
    upstream: FakeOpenAI
    log: io.StringIO
    metrics: Metrics

    @property
    def url(self) -> str:
        return str(self.server.make_url("/v1"))

    @property
    def root(self) -> str:
        return str(self.server.make_url(""))


def gateway_yaml(upstream_url: str, extra: str = "", models: str = "") -> str:
    return (
        textwrap.dedent(f"""\
        version: 1
        providers:
          up: {{type: openai, base_url: "{upstream_url}", api_key: "{PROVIDER_SECRET}",
                timeouts: {{connect_s: 2, read_s: 2}}}}
          backup: {{type: openai, base_url: "{upstream_url}", api_key: "{PROVIDER_SECRET}",
                    timeouts: {{connect_s: 2, read_s: 2}}}}
          slow: {{type: openai, base_url: "{upstream_url}", api_key: "{PROVIDER_SECRET}",
                  timeouts: {{connect_s: 2, read_s: 5, first_byte_s: 0.3}}}}
          demo: {{type: mock, stream_chunks: 4}}
        models:
          gpt-4o: {{targets: [{{provider: up, model: gpt-4o}}]}}
          with-backup:
            targets:
              - {{provider: up, model: primary-model}}
              - {{provider: backup, model: backup-model}}
          text-embedding-3-small: {{targets: [{{provider: up, model: text-embedding-3-small}}]}}
          secret: {{targets: [{{provider: demo, model: mock-secret}}]}}
          mock: {{targets: [{{provider: demo, model: mock-1}}]}}
        projects:
          acme: {{models: [gpt-4o, with-backup, text-embedding-3-small, mock]}}
          other: {{}}
        keys:
          - {{id: acme-key, project: acme, sha256: "{digest(KEY)}"}}
          - {{id: other-key, project: other, sha256: "{digest(OTHER_KEY)}"}}
          - {{id: expired, project: other, sha256: "{digest("aig-expired-key-123456")}",
              expires_at: 2020-01-01T00:00:00Z}}
          - {{id: off-key, project: other, sha256: "{digest("aig-disabled-key-123456")}",
              disabled: true}}
        """).replace("models:\n", "models:\n" + models, 1)
        + extra
    )


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    """One loaded tokenizer for the whole run (loading takes ~0.5 s)."""
    tok = Tokenizer()
    tok.load()
    return tok


@pytest.fixture
async def make_gateway(tokenizer: Tokenizer) -> AsyncIterator[GatewayFactory]:
    servers: list[TestServer] = []

    async def make(
        extra: str = "",
        yaml_text: str | None = None,
        models: str = "",
        edit: Callable[[str], str] = lambda text: text,
    ) -> Gateway:
        upstream = FakeOpenAI()
        up_server = TestServer(upstream.app, host="127.0.0.1")
        await up_server.start_server()
        servers.append(up_server)
        text = edit(yaml_text or gateway_yaml(str(up_server.make_url("/v1")), extra, models))
        loaded = parse_config(text.encode(), env=os.environ, base_dir=Path("."))
        log = io.StringIO()
        access_log = configure_logging(fmt="json", level="debug", stream=log)
        metrics = Metrics()
        server = TestServer(
            create_app(loaded, metrics=metrics, access_log=access_log, tokenizer=tokenizer),
            host="127.0.0.1",
            handler_cancellation=True,  # as aigateway serve runs it
        )
        await server.start_server()
        servers.append(server)
        return Gateway(server, upstream, log, metrics)

    yield make
    for server in reversed(servers):
        await server.close()


Both = Callable[..., Awaitable[tuple[Gateway, FakeAnthropic]]]


@pytest.fixture
async def both(
    make_gateway: GatewayFactory,
) -> AsyncIterator[Both]:
    servers: list[TestServer] = []

    async def make(
        extra: str = "", edit: Callable[[str], str] = lambda t: t
    ) -> tuple[Gateway, FakeAnthropic]:
        fake = FakeAnthropic()
        server = TestServer(fake.app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        url = str(server.make_url("/v1"))

        def wire(text: str) -> str:
            provider = (
                f'  claude: {{type: anthropic, base_url: "{url}", api_key: "{ANTHROPIC_SECRET}",'
                " beta: [gateway-beta-1], timeouts: {connect_s: 2, read_s: 5}}\n"
            )
            route = "  claude-x: {targets: [{provider: claude, model: claude-sonnet-4-5}]}\n"
            text = text.replace("providers:\n", "providers:\n" + provider, 1)
            return edit(text.replace("models:\n", "models:\n" + route, 1))

        return await make_gateway(extra=extra, edit=wire), fake

    yield make
    for server in servers:
        await server.close()


# --- Redis -----------------------------------------------------------------------------


@dataclass
class RedisServer:
    url: str
    pid: int | None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis: REDIS_URL if set, else a redis-server of our own on a free port.

    With AIGATEWAY_REQUIRE_REDIS=1 (CI) a missing Redis fails the run instead of
    skipping the Redis-backed tests.
    """
    if os.environ.get("REDIS_URL"):
        yield RedisServer(os.environ["REDIS_URL"], None)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("AIGATEWAY_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed and REDIS_URL is not set")
        pytest.skip("redis-server is not installed and REDIS_URL is not set")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start within 10 s")
        yield RedisServer(f"redis://127.0.0.1:{port}/0", proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
