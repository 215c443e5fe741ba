"""Memory settings: the allocator's, applied on glibc and left to the environment when
it says; closed connections freed by reference counting."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from aigateway.memory import limit_arenas

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_malloc_arena_max_in_the_environment_wins() -> None:
    assert limit_arenas({"MALLOC_ARENA_MAX": "4"}) is False


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_one_arena_is_set_before_threads_start() -> None:
    # in a fresh process: this one has threads (and arenas) already
    code = "from aigateway.memory import limit_arenas; assert limit_arenas({}) is True"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_pages_go_back_after_a_big_load() -> None:
    # megabytes freed mid-heap (a later allocation pins the heap's top): the pages
    # of the hole go back, and the process's RSS falls
    code = """
import gc
from aigateway.memory import limit_arenas, release_free_memory
limit_arenas({})
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
blocks = [bytearray(100_000) for _ in range(400)]  # ~40 MB below the mmap threshold
pin = bytearray(100_000)  # above them: the heap cannot shrink from its top
del blocks
gc.collect()
before = rss()
assert release_free_memory()
assert before - rss() > 20_000_000, (before, rss())
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


#: 10 connections to a server, each closed by the server after one echo; prints how
#: many of their 20 transports (both ends) are still alive with the collector off
CONNECTIONS = """
import asyncio, gc, sys, weakref
from aigateway.memory import free_closed_connections

if sys.argv[1] == "fixed":
    assert free_closed_connections() is (sys.version_info < (3, 12))
    assert free_closed_connections() is False  # once is enough
seen = []

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        seen.append(weakref.ref(transport))
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)
        self.transport.close()

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for _ in range(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        seen.append(weakref.ref(writer.transport))
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(), 5) == b"ping"  # then EOF
        writer.close()
        await writer.wait_closed()
        del reader, writer
    server.close()
    await server.wait_closed()
    for _ in range(5):  # the transports' connection_lost callbacks
        await asyncio.sleep(0)

gc.disable()
asyncio.run(main())
print(len(seen), sum(ref() is not None for ref in seen))
"""


@pytest.mark.parametrize("mode", ["fixed", "as is"])
def test_a_closed_connection_is_freed_without_the_cyclic_collector(mode: str) -> None:
    # in a fresh process: the fix changes asyncio for the whole process
    out = subprocess.run(
        [sys.executable, "-c", CONNECTIONS, mode],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    opened, left = map(int, out.split())
    assert opened == 20
    if mode == "fixed" or sys.version_info >= (3, 12):
        assert left == 0  # freed by reference counting as each closed
    else:  # Python 3.11 as it is: every closed one waits for the cyclic collector
        assert left == 20


def test_serve_frees_closed_connections_before_it_serves() -> None:
    code = """
import asyncio, sys
from asyncio import selector_events
from aigateway import cli

def run(main):
    main.close()
    lost = selector_events._SelectorSocketTransport._call_connection_lost
    assert getattr(lost, "frees_read_callback", False) is (sys.version_info < (3, 12))
    print("checked")

asyncio.run = run
assert cli.main(["serve", "--config", "gateway.yaml.example", "--no-watch"]) == 0
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    assert "checked" in out
