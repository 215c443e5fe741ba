"""The prompt log: a row per request, append-only, chained, strict durability, CLI."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiohttp
import openai
import pytest
import structlog
from openai.types.chat import ChatCompletionMessageParam

from aigateway import cli, ledger, logread
from aigateway.keys import digest
from aigateway.metrics import Metrics
from aigateway.promptlog import PromptLog, log_files
from aigateway.tasks import Tasks
from aigateway.web_common import PROMPT_LOG
from tests.conftest import KEY, OTHER_KEY, GatewayFactory, free_port
from tests.fakes import Reply, chunk_events, completion, error_body
from tests.procs import serve, stop, wait_ready

ACME = "acme: {models: [gpt-4o, with-backup, text-embedding-3-small, mock]"
PRICED = """
pricing:
  "up/gpt-4o": {input_per_mtok: 1000, output_per_mtok: 2000}
"""


def with_log(path: Path, project: str = "", durability: str = "strict") -> Callable[[str], str]:
    def edit(text: str) -> str:
        text = text.replace(
            "providers:\n",
            f'prompt_log: {{path: "{path}", durability: {durability}}}\nproviders:\n',
            1,
        )
        if project:
            text = text.replace(ACME, f"{ACME}, {project}")
        return text

    return edit


def read(path: Path) -> list[dict]:
    return list(logread.rows(log_files(path)))


async def test_a_row_for_every_kind_of_outcome(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "log" / "prompts.sqlite"
    gw = await make_gateway(
        extra=PRICED,
        edit=with_log(path, project="rate_limits: {rpm: 4}, budgets: [{window: day, usd: 0.1}]"),
    )
    up = gw.upstream
    up.script += [
        Reply(body=completion(model="gpt-4o", prompt=10, completion=2)),  # success
        Reply(status=500, body=error_body("boom", "server_error")),  # upstream error
        Reply(events=chunk_events(model="gpt-4o")),  # streamed
    ]
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        ok = await c.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[
                {
                    "role": "user",
                    "content": "mail jane.doe@example.com, key sk-abcdefghijklmnop12345",
                }
            ],
            max_tokens=5,
        )
        with pytest.raises(openai.InternalServerError):
            await c.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}], max_tokens=5
            )
        stream = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=5
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
        with pytest.raises(openai.RateLimitError) as budget:  # the budget cannot pay for it
            await c.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}], max_tokens=100_000
            )
        await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "y"}], max_tokens=1
        )
        with pytest.raises(openai.RateLimitError) as rate:  # the fifth request in a minute
            await c.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "z"}], max_tokens=1
            )
    assert budget.value.body["code"] == "insufficient_quota"  # type: ignore[index]
    assert rate.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    rows = read(path)
    by_id = {r["request_id"]: r for r in rows}
    first = by_id[ok.headers["x-request-id"]]
    assert [r["status"] for r in rows] == [200, 502, 200, 429, 200, 429]
    assert first["key_id"] == "acme-key" and first["project"] == "acme"
    assert first["route"] == "gpt-4o" and first["provider"] == "up"
    assert first["served_model"] == "gpt-4o" and first["requested_model"] == "gpt-4o"
    assert (first["prompt_tokens"], first["completion_tokens"]) == (10, 2)
    assert first["usage_source"] == "provider"
    assert first["cost_usd"] == "0.014" and first["cost_nano"] == 14_000_000
    request_body = json.loads(first["request_body"])
    content = request_body["messages"][0]["content"]
    assert "jane.doe" not in content and "sk-abcdef" not in content
    assert "[REDACTED:email]" in content and "[REDACTED:secret]" in content
    assert json.loads(first["response_body"])["choices"][0]["message"]["content"] == "Hello!"
    assert rows[1]["error_class"] == "UpstreamStatusError"
    assert json.loads(rows[1]["attempts"])[0]["status"] == 500
    assert rows[2]["stream"] == 1 and rows[2]["response_body"] == text == "Hello!"
    assert rows[3]["error_class"] == "BudgetExceeded" and rows[3]["provider"] is None
    assert rows[5]["error_class"] == "RateLimited"
    assert logread.verify(log_files(path)).ok
    # a key outside the project has no budget and its project logs metadata only
    assert gw.metrics.prompt_log_rows.values[()] == 6


async def test_metadata_mode_keeps_no_bodies(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    path = tmp_path / "prompts.sqlite"
    gw = await make_gateway(edit=with_log(path, project="prompt_log: metadata"))
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "secret plan"}]
        )
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=OTHER_KEY, max_retries=0) as c:
        await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
        )
    acme, other = read(path)
    assert acme["request_body"] is None and acme["response_body"] is None
    assert acme["prompt_tokens"] == 10  # the accounting row is always written
    assert "hello" in other["request_body"]  # the default mode: full


async def test_a_stream_the_caller_left_is_logged_as_499(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "prompts.sqlite"
    gw = await make_gateway(edit=with_log(path))
    gate = asyncio.Event()
    events = chunk_events(pieces=("Hello", " there"))[1:]
    gw.upstream.script.append(Reply(events=events, gate=gate))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            gw.url + "/chat/completions",
            json={
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            },
            headers={"authorization": f"Bearer {KEY}"},
        )
        await asyncio.wait_for(resp.content.readline(), 5)
        resp.close()
    gate.set()
    for _ in range(100):
        if read(path):
            break
        await asyncio.sleep(0.02)
    (row,) = read(path)
    assert row["status"] == 499 and row["error_class"] == "ClientClosed"
    assert row["usage_source"] == "estimated" and row["completion_tokens"] >= 1


async def test_unauthenticated_requests_get_no_row(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "prompts.sqlite"
    gw = await make_gateway(edit=with_log(path))
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/chat/completions", json={}) as resp,
    ):
        assert resp.status == 401
    assert read(path) == []


# --- append-only, chained --------------------------------------------------------------


async def write_rows(path: Path, n: int, **config: object) -> PromptLog:
    from aigateway.config.model import PromptLogConfig

    log = PromptLog(PromptLogConfig(path=str(path), **config), Metrics())
    tasks = Tasks(structlog.get_logger())
    await log.open(tasks.spawn)
    futures = [log.submit(sample_row(i)) for i in range(n)]
    assert all(await asyncio.gather(*[f for f in futures if f is not None]))
    await log.close()
    await tasks.close()
    return log


def sample_row(i: int, **over: object) -> dict:
    from aigateway.promptlog import row_from_mapping

    return row_from_mapping(
        {
            "ts": f"2026-11-2{i % 3 + 1}T10:00:00.000+00:00",
            "ts_unix": 1795478400.0 + 86400 * (i % 3) + i,
            "request_id": f"req-{i}",
            "endpoint": "chat",
            "key_id": ["k1", "k2"][i % 2],
            "project": "p",
            "route": ["fast", "best"][i % 2],
            "served_model": "m",
            "provider": "demo",
            "status": 500 if i % 5 == 0 else 200,
            "attempts": "[]",
            "stream": 0,
            "cache_hit": 0,
            "prompt_tokens": 10 + i,
            "completion_tokens": 2 * i,
            "cost_usd": str(i / 1000),
            "cost_nano": i * 1_000_000,
            "latency_ms": float(i + 1),
            "overhead_ms": 0.1,
            "labels": json.dumps({"key": {"team": ["red", "blue"][i % 2]}, "project": {}}),
            **over,
        }
    )


def test_row_hash_is_sha256_of_the_canonical_json() -> None:
    """What logs written by every version hold: verification recomputes it."""
    import hashlib

    row = sample_row(7, request_body='{"q": "naïve \\"quoted\\" ✓"}', ttfb_ms=1e-7)
    canonical = json.dumps(
        [7, ledger.GENESIS, *(row[name] for name in ledger.NAMES)],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert ledger.row_hash(7, ledger.GENESIS, row) == expected
    assert ledger.chain([row], 6, ledger.GENESIS)[0][-1] == expected


async def test_update_and_delete_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    await write_rows(path, 3)
    with sqlite3.connect(path) as db:
        for sql in ("UPDATE requests SET status = 200", "DELETE FROM requests WHERE seq = 2"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)


#: a copy of a row's columns with another request id
FORGED = ["'forged'" if name == "request_id" else name for name in ledger.NAMES]


def tamper(path: Path, *statements: str) -> None:
    """What an attacker with file access can do: drop the triggers, then edit."""
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER requests_no_update")
        db.execute("DROP TRIGGER requests_no_delete")
        for sql in statements:
            db.execute(sql)


@pytest.mark.parametrize(
    ("statements", "problem"),
    [
        (["UPDATE requests SET cost_usd = '0' WHERE seq = 3"], "seq 3 (request req-2): content"),
        (["DELETE FROM requests WHERE seq = 3"], "seq 4 (request req-3): expected seq 3"),
        (
            [
                f"INSERT INTO requests SELECT 6, {', '.join(FORGED)}, prev_hash, hash "
                "FROM requests WHERE seq = 2"
            ],
            "seq 6 (request forged): does not follow",
        ),
        (
            # swap the contents of rows 2 and 3 (each keeps its hash)
            [
                "UPDATE requests SET seq = -2 WHERE seq = 2",
                "UPDATE requests SET seq = 2 WHERE seq = 3",
                "UPDATE requests SET seq = 3 WHERE seq = -2",
            ],
            "seq 2 (request req-2): does not follow",
        ),
    ],
    ids=["edited", "deleted", "inserted", "swapped"],
)
async def test_verify_finds_the_first_tampered_row(
    tmp_path: Path, statements: list[str], problem: str
) -> None:
    path = tmp_path / "p.sqlite"
    await write_rows(path, 5)
    assert logread.verify(log_files(path)).ok
    tamper(path, *statements)
    verdict = logread.verify(log_files(path))
    assert not verdict.ok
    assert problem in (verdict.problem or "")


async def test_verify_catches_truncation_against_the_anchor(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    await write_rows(path, 5)
    anchor_copy = tmp_path / "elsewhere.anchor"
    anchor_copy.write_text((tmp_path / "p.sqlite.anchor").read_text())
    tamper(path, "DELETE FROM requests WHERE seq >= 4")
    assert logread.verify(log_files(path)).ok  # the chain itself is still whole
    verdict = logread.verify(log_files(path), logread.read_anchor(anchor_copy))
    assert not verdict.ok and "cut off" in (verdict.problem or "")
    assert cli.main(["log", "verify", "--log", str(path), "--anchor", str(anchor_copy)]) == 1


async def test_rotation_keeps_old_files_read_only_and_the_chain_whole(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    await write_rows(path, 30, rotate_mb=0.001)  # rotates after almost every commit
    await write_rows(path, 5, rotate_mb=0.001)  # a restart continues the chain
    files = log_files(path)
    assert len(files) >= 2
    assert all(not (f.stat().st_mode & 0o222) for f in files[:-1])
    verdict = logread.verify(files)
    assert verdict.ok and verdict.rows == 35


async def test_a_full_disk_does_not_stop_requests_and_rows_follow_later(tmp_path: Path) -> None:
    from aigateway.config.model import PromptLogConfig

    metrics = Metrics()
    log = PromptLog(PromptLogConfig(path=str(tmp_path / "p.sqlite")), metrics)
    tasks = Tasks(structlog.get_logger())
    await log.open(tasks.spawn)
    assert await log.submit(sample_row(0))  # type: ignore[misc]
    db = log._db
    assert db is not None
    async with db.execute("PRAGMA page_count") as cur:
        pages = (await cur.fetchone())[0]  # type: ignore[index]
    await db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    big = "x" * 20000
    futures = [log.submit(sample_row(i, request_body=big)) for i in range(1, 4)]
    results = await asyncio.gather(*[f for f in futures if f is not None])
    assert results == [False, False, False]  # the callers were not held up
    assert metrics.prompt_log_errors.values[("OperationalError",)] >= 1
    await db.execute("PRAGMA max_page_count = 1073741823")  # space is back
    await asyncio.wait_for(log.submit(sample_row(4)), 10)  # type: ignore[arg-type]
    await log.close()
    await tasks.close()
    assert [r["request_id"] for r in read(tmp_path / "p.sqlite")] == [f"req-{i}" for i in range(5)]


# --- the CLI ---------------------------------------------------------------------------


async def test_log_stats_match_totals_computed_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.sqlite"
    await write_rows(path, 40)
    rows = [sample_row(i) for i in range(40)]
    assert (
        cli.main(
            [
                "log",
                "stats",
                "--log",
                str(path),
                "--json",
                "--series",
                "day",
                "--by",
                "key_id",
                "--by",
                "label:team",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    total = out["total"]
    assert total["requests"] == 40
    assert total["errors"] == sum(1 for r in rows if r["status"] >= 400)
    assert total["input_tokens"] == sum(r["prompt_tokens"] for r in rows)
    assert total["output_tokens"] == sum(r["completion_tokens"] for r in rows)
    assert total["cost_usd"] == pytest.approx(sum(r["cost_nano"] for r in rows) / 1e9)
    lat = sorted(r["latency_ms"] for r in rows)
    assert total["latency_ms"]["p50"] == lat[19] and total["latency_ms"]["max"] == lat[-1]
    assert out["by"]["key_id"]["k1"]["requests"] == 20
    assert out["by"]["label:team"]["red"]["requests"] == 20
    assert sum(s["requests"] for s in out["series"].values()) == 40 and len(out["series"]) == 3


async def test_log_show_export_tail_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.sqlite"
    await write_rows(path, 4)
    assert cli.main(["log", "show", "req-2", "--log", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["request_id"] == "req-2" and shown["labels"]["key"]["team"] == "red"
    assert cli.main(["log", "show", "nope", "--log", str(path)]) == 1
    capsys.readouterr()
    assert cli.main(["log", "export", "--log", str(path), "--no-bodies"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4] and "request_body" not in lines[0]
    assert cli.main(["log", "tail", "-n", "2", "--log", str(path)]) == 0
    tail = capsys.readouterr().out.splitlines()
    assert len(tail) == 2 and "req-3" in tail[-1]
    assert cli.main(["log", "verify", "--log", str(path)]) == 0
    assert "ok, 4 rows" in capsys.readouterr().out


# --- budgets rebuilt from the log ------------------------------------------------------


async def test_memory_budgets_survive_a_restart_through_the_log(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "prompts.sqlite"
    edit = with_log(path, project="budgets: [{window: day, usd: 0.03}]")
    gw = await make_gateway(extra=PRICED, edit=edit)
    gw.upstream.by_model["gpt-4o"] = Reply(body=completion(model="gpt-4o", prompt=10, completion=2))
    msgs: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        await c.chat.completions.create(model="gpt-4o", messages=msgs, max_tokens=2)  # $0.014
    await gw.server.close()  # the process stops; its memory is gone
    assert gw.server.app[PROMPT_LOG].path == path
    again = await make_gateway(extra=PRICED, edit=edit)
    again.upstream.by_model["gpt-4o"] = gw.upstream.by_model["gpt-4o"]
    async with openai.AsyncOpenAI(base_url=again.url, api_key=KEY, max_retries=0) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=msgs, max_tokens=2
        )
        # 0.03 - 0.014 (before the restart) - 0.014 (now)
        assert raw.headers["x-aigateway-budget-remaining-usd"] == "0.002"
        with pytest.raises(openai.RateLimitError):
            await c.chat.completions.create(model="gpt-4o", messages=msgs, max_tokens=2)


async def test_admin_usage_summarises_the_log(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    admin = "aig-admin-usage-0123456789"
    path = tmp_path / "prompts.sqlite"

    def edit(text: str) -> str:
        text = with_log(path)(text)
        return text.replace(
            "providers:\n", f'admin: {{key_sha256: "{digest(admin)}"}}\nproviders:\n', 1
        )

    gw = await make_gateway(extra=PRICED, edit=edit)
    gw.upstream.by_model["gpt-4o"] = Reply(body=completion(model="gpt-4o", prompt=10, completion=2))
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        for _ in range(3):
            await c.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
    async with aiohttp.ClientSession(headers={"x-api-key": admin}) as http:
        async with http.get(gw.root + "/admin/usage?since=1h&by=project&series=hour") as resp:
            assert resp.status == 200
            body = await resp.json()
        async with http.get(gw.root + "/admin/usage?series=week") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "series"
    assert body["total"]["requests"] == 3
    assert body["total"]["cost_usd"] == pytest.approx(3 * 0.014)
    assert body["by"]["project"]["acme"]["input_tokens"] == 30
    assert len(body["series"]) == 1


SERVED = """\
version: 1
{log}providers:
  demo: {{type: mock}}
models:
  fast: {{targets: [{{provider: demo, model: m}}]}}
projects: {{p: {{}}}}
keys:
  - {{id: k, project: p, sha256: "{sha}"}}
"""


@pytest.mark.parametrize("has_log", [False, True])
async def test_sqlite_is_loaded_only_by_a_gateway_with_a_log(tmp_path: Path, has_log: bool) -> None:
    """SQLite and its modules (~1.4 MiB) are in a serving gateway's memory only when
    it writes a prompt log (its mapped libraries are the evidence)."""
    key = "aig-sqlite-probe-0123456789"
    log = f'prompt_log: {{path: "{tmp_path / "prompts.sqlite"}"}}\n' if has_log else ""
    path = tmp_path / "gateway.yaml"
    path.write_text(SERVED.format(log=log, sha=digest(key)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(path, port, "--no-watch")
    try:
        await wait_ready(url, proc)
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as c:
            await c.chat.completions.create(
                model="fast", messages=[{"role": "user", "content": "hi"}]
            )
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        stop(proc)
    assert ("_sqlite3" in maps) is has_log
