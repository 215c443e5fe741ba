"""Gateways as real processes (``python -m aigateway serve``), stopped by PID."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import aiohttp


class Served(subprocess.Popen[bytes]):
    """A gateway process whose output goes to a file (a pipe nobody reads fills up
    and blocks the gateway after ~64 KiB of access log)."""

    log: IO[bytes]


def serve(path: Path, port: int, *extra: str) -> Served:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
    proc = Served(
        [
            sys.executable,
            "-m",
            "aigateway",
            "serve",
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log = log
    return proc


def output(proc: Served) -> str:
    proc.log.seek(0)
    return proc.log.read().decode("utf-8", "replace")


async def wait_ready(url: str, proc: Served) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            assert proc.poll() is None, output(proc)
            try:
                async with s.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("not ready")


def stop(proc: Served) -> str:
    """Kill it (if still running) and return everything it printed."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=20)
    out = output(proc)
    proc.log.close()
    return out
