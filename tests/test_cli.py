"""The aigateway command, run as users run it: a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from aigateway.keys import digest
from tests.conftest import ROOT, free_port

EXAMPLE = ROOT / "gateway.yaml.example"
DEMO_KEY = "aig-demo-key-change-me"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_version() -> None:
    proc = run("version")
    assert proc.returncode == 0
    assert re.fullmatch(r"aigateway \d+\.\d+\.\d+\n", proc.stdout)


def test_check_ok() -> None:
    proc = run("check", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and "providers" in proc.stdout


def test_check_reports_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text(
        EXAMPLE.read_text()
        .replace("provider: demo-backup", "provider: demo-bakup")
        .replace("project: demo\n", "project: dmeo\n")
    )
    proc = run("check", str(bad))
    assert proc.returncode == 1
    assert "models.fast.targets[1].provider" in proc.stderr
    assert "unknown provider 'demo-bakup' (did you mean 'demo-backup'?)" in proc.stderr
    assert "keys[0].project" in proc.stderr


def test_keys_new_prints_a_key_and_its_digest() -> None:
    proc = run("keys", "new", "--project", "acme", "--id", "acme-ci")
    assert proc.returncode == 0
    key = re.search(r"^(aig-\S+)$", proc.stdout, re.M)
    assert key is not None
    line = re.search(r'- \{id: acme-ci, project: acme, sha256: "([0-9a-f]{64})"\}', proc.stdout)
    assert line is not None and line.group(1) == digest(key.group(1))
    assert run("keys", "new", "--project", "bad name").returncode == 2


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gateway did not become ready")


@pytest.mark.slow
def test_serve_the_example_config_offline(tmp_path: Path) -> None:
    """The README's first command: serve gateway.yaml.example, then use it."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aigateway",
            "serve",
            "--config",
            str(EXAMPLE),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,  # the example's prompt log goes to ./data/prompts.sqlite
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        req = urllib.request.Request(
            url + "/v1/chat/completions",
            data=json.dumps(
                {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
            ).encode(),
            headers={"Authorization": f"Bearer {DEMO_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
            assert resp.headers["x-aigateway-provider"] == "demo"
        assert body["choices"][0]["message"]["content"].endswith("You said: hi")
        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert (
            'aigateway_requests_total{key="demo-key",project="demo",provider="demo",'
            'route="fast",status="2xx"} 1.0' in metrics
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    # the request is in the prompt log, which the CLI reads
    stats = subprocess.run(
        [sys.executable, "-m", "aigateway", "log", "stats", "--json", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert json.loads(stats.stdout)["total"]["requests"] == 1
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "request"]
    assert len(access) == 1
    assert access[0]["key_id"] == "demo-key" and access[0]["status"] == 200
    assert DEMO_KEY not in out
    assert "hi" not in [v for line in access for v in line.values()]


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text("version: 1\n")
    proc = run("serve", "--config", str(bad), "--port", str(free_port()))
    assert proc.returncode == 1
    assert "providers" in proc.stderr


def test_models_lists_routes_targets_and_prices() -> None:
    proc = run("models", "--config", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["ROUTE", "STRATEGY", "TARGET"]
    gpt = next(line.split() for line in lines if line.startswith("gpt-4o "))
    assert gpt[2:] == ["openai/gpt-4o", "-", "2.5", "10", "1.25"]
    llama = next(line.split() for line in lines if line.startswith("llama "))
    assert llama[3] == "8192"
    rows = [
        json.loads(x) for x in run("models", "--config", str(EXAMPLE), "--json").stdout.splitlines()
    ]
    assert {r["route"] for r in rows} >= {"fast", "balanced", "best", "thinking", "gpt-4o"}
