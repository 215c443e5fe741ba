"""Measure the gateway against a bare aiohttp proxy (the baseline) and no proxy at all.

Topology on a 2-core machine:
- core 0: nginx (one worker, canned OpenAI JSON and SSE answers) and wrk;
- core 1: the proxy under test, alone: the baseline or the gateway, one at a time.

Each round runs every scenario (JSON and SSE at 1, 32 and 256 connections) for direct,
baseline and gateway, interleaved, so a noisy neighbour hurts all three alike.
Prints RPS, p50 and p99 per target, the gateway/baseline RPS ratio, the p50
the gateway adds over direct at one connection, and each proxy's peak RSS.

    python benchmarks/run.py [--rounds 3] [--duration 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = "aig-bench-key-000000000000000000"
#: a key whose project has every limit and budget (never reached): the full
#: governance chain (offline token count, admission, settlement) on every request
GOV_KEY = "aig-bench-governed-0000000000000"
#: a key whose project runs every guardrail detector on every request
GUARD_KEY = "aig-bench-guarded-00000000000000"
CONNECTIONS = (1, 32, 256)
#: failover: the route's primary always answers 503, its fallback is healthy;
#: governed: the JSON route for a key with rate limits and budgets;
#: logged: the JSON route on a second gateway that writes the prompt log
#: (durability strict, bodies redacted): every answer waits for its commit;
#: guarded: the JSON route for a key with every guardrail on (requests and answers);
#: guarded_sse: the same on the SSE route (streamed answers checked chunk by chunk);
#: cached: a route with the response cache on (every request after the first hits);
#: semantic: a route with the semantic cache on, every request's question different:
#: each is embedded (an upstream call) and answered by the first one's entry;
#: minimal_json, minimal_sse: the plain routes on a third gateway whose config has no
#: limits, budgets, guardrails or caches anywhere (what a plain deployment runs; its
#: RSS has no tokenizer or vector kernels in it, only OpenAI's price table)
KINDS = (
    "json", "sse", "failover", "governed", "logged", "guarded", "guarded_sse", "cached",
    "semantic", "minimal_json", "minimal_sse",
)  # fmt: skip
STREAMED = ("sse", "guarded_sse", "minimal_sse")
#: the route each scenario asks for
MODELS = {"governed": "bench-json", "logged": "bench-json", "guarded": "bench-json",
          "guarded_sse": "bench-sse", "minimal_json": "bench-json",
          "minimal_sse": "bench-sse"}  # fmt: skip
#: the plain scenario each feature is measured against
PLAIN = {"guarded_sse": "sse", "minimal_sse": "sse"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def canned(stream: bool) -> str:
    base = {"id": "chatcmpl-bench", "created": 1700000000, "model": "gpt-4o-2024-08-06"}
    if not stream:
        return json.dumps(
            {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello! " * 20},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52},
            }
        )
    events = []
    chunk = {**base, "object": "chat.completion.chunk"}
    events.append(
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    )
    events += [{**chunk, "choices": [{"index": 0, "delta": {"content": "Hello! "}}]}] * 20
    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append(
        {
            **chunk,
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
        }
    )
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def canned_embedding() -> str:
    """One 1536-dimension vector, as text-embedding-3-small answers the semantic
    cache's lookup (which asks for ``encoding_format: base64``)."""
    vector = [round(((i * 7919) % 1000) / 1000 - 0.5, 6) for i in range(1536)]
    packed = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return json.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": packed}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )


def nginx_conf(port: int, tmp: Path) -> str:
    (tmp / "json").write_text(canned(False))
    (tmp / "sse").write_text(canned(True))
    (tmp / "embedding").write_text(canned_embedding())
    return textwrap.dedent(f"""\
        worker_processes 1;
        daemon off;
        pid {tmp}/nginx.pid;
        error_log {tmp}/nginx-error.log;
        events {{ worker_connections 4096; }}
        http {{
          access_log off;
          client_body_temp_path {tmp};
          proxy_temp_path {tmp};
          fastcgi_temp_path {tmp};
          uwsgi_temp_path {tmp};
          scgi_temp_path {tmp};
          keepalive_requests 1000000;
          server {{
            listen 127.0.0.1:{port};
            location = /json/v1/chat/completions {{
              default_type application/json;
              client_body_buffer_size 64k;
              alias {tmp}/json;
              error_page 405 =200 $uri;
            }}
            location = /json/v1/embeddings {{
              default_type application/json;
              client_body_buffer_size 64k;
              alias {tmp}/embedding;
              error_page 405 =200 $uri;
            }}
            location = /fail/v1/chat/completions {{
              default_type application/json;
              return 503 '{{"error": {{"message": "overloaded", "type": "server_error"}}}}';
            }}
            location = /sse/v1/chat/completions {{
              default_type text/event-stream;
              client_body_buffer_size 64k;
              alias {tmp}/sse;
              error_page 405 =200 $uri;
            }}
          }}
        }}
        """)


def gateway_conf(upstream: str) -> str:
    import hashlib

    digest = hashlib.sha256(KEY.encode()).hexdigest()
    governed = hashlib.sha256(GOV_KEY.encode()).hexdigest()
    guarded = hashlib.sha256(GUARD_KEY.encode()).hexdigest()
    return textwrap.dedent(f"""\
        version: 1
        server: {{log_level: info}}
        providers:
          # priced as OpenAI's own API is (genai-prices' table), as in production
          json-up: {{type: openai, base_url: "{upstream}/json/v1", api_key: "sk-bench",
                    price_as: openai}}
          sse-up: {{type: openai, base_url: "{upstream}/sse/v1", api_key: "sk-bench",
                   price_as: openai}}
          fail-up: {{type: openai, base_url: "{upstream}/fail/v1", api_key: "sk-bench",
                    price_as: openai}}
        models:
          bench-json: {{targets: [{{provider: json-up, model: gpt-4o}}]}}
          bench-sse: {{targets: [{{provider: sse-up, model: gpt-4o}}]}}
          bench-cached: {{targets: [{{provider: json-up, model: gpt-4o}}], cache: {{ttl_s: 3600}}}}
          bench-embed: {{targets: [{{provider: json-up, model: text-embedding-3-small}}]}}
          bench-semantic:
            targets: [{{provider: json-up, model: gpt-4o}}]
            cache: {{ttl_s: 3600, semantic: {{embeddings: bench-embed, threshold: 0.9}}}}
          # a primary that always fails (503) and a healthy fallback
          bench-failover:
            targets: [{{provider: fail-up, model: gpt-4o}}, {{provider: json-up, model: gpt-4o}}]
        projects:
          bench: {{}}
          governed:
            rate_limits: {{rpm: 100000000, tpm: 1000000000000, concurrency: 100000}}
            budgets: [{{window: day, usd: 1000000}}, {{window: month, tokens: 1000000000000}}]
          guarded:
            guardrails: {{email: redact, phone: redact, card: block, iban: block, ssn: block,
                          ip: log, secrets: redact, injection: log, responses: true}}
        keys:
          - {{id: bench, project: bench, sha256: "{digest}"}}
          - {{id: guarded, project: guarded, sha256: "{guarded}"}}
          - {{id: governed, project: governed, sha256: "{governed}",
              rate_limits: {{rpm: 100000000}}}}
        """)


def minimal_conf(upstream: str) -> str:
    """The plain routes of ``gateway_conf`` and nothing else: no limits, budgets,
    guardrails or caches anywhere."""
    import yaml

    full = yaml.safe_load(gateway_conf(upstream))
    plain = ("bench-json", "bench-sse")
    return yaml.safe_dump(
        {
            **full,
            "providers": {n: full["providers"][n] for n in ("json-up", "sse-up")},
            "models": {n: full["models"][n] for n in plain},
            "projects": {"bench": {}},
            "keys": [k for k in full["keys"] if k["id"] == "bench"],
        }
    )


@dataclass
class Result:
    target: str
    kind: str
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int


def wrk(
    url: str, body_file: Path, connections: int, duration: float, auth: str, vary: bool = False
) -> Result:
    threads = 1 if connections == 1 else 2
    proc = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "post.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BODY_FILE": str(body_file), "AUTH": auth, "VARY": "1" if vary else ""},
        timeout=duration + 60,
        check=False,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {proc.stdout}\n{proc.stderr}")
    _, requests, micros, p50, p99, failed = line.split()
    return Result(
        "",
        "",
        connections,
        int(requests),
        int(requests) / (int(micros) / 1e6),
        float(p50),
        float(p99),
        int(failed),
    )


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    """VmHWM: peak resident memory; VmRSS: resident memory now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Proc:
    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.log = log.open("wb")
        self.p = subprocess.Popen(
            ["taskset", "-c", "1", *args], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_port(port)

    def stop(self) -> float:
        rss = rss_mib(self.p.pid)
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=10)
        self.log.close()
        return rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--connections", default=",".join(map(str, CONNECTIONS)))
    ap.add_argument("--json", type=Path, help="write raw results here")
    ap.add_argument("--kinds", default=",".join(KINDS), help="scenarios to run (default: all)")
    ap.add_argument(
        "--baseline-client",
        choices=("aiohttp", "http1"),
        default="aiohttp",
        help="the baseline's upstream client: aiohttp's (the default), or the gateway's "
        "own (aiohttp's server, the gateway's client, nothing in between)",
    )
    ap.add_argument(
        "--compare",
        metavar="PYTHON",
        help="also measure the gateway run by this interpreter (another build of aigateway, "
        "e.g. .venv-mypyc/bin/python) right after the first one, on the same config",
    )
    args = ap.parse_args()
    kinds = [k for k in KINDS if k in args.kinds.split(",")]
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"needs {tool}: apt-get install -y nginx-light wrk util-linux", file=sys.stderr)
            return 2
    conns = [int(c) for c in args.connections.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="aigw-bench-"))
    up_port, base_port, gw_port, log_port = free_port(), free_port(), free_port(), free_port()
    min_port, cmp_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    (tmp / "nginx.conf").write_text(nginx_conf(up_port, tmp))
    # The configs in a directory of their own, as deployed (/etc/aigateway): the
    # gateway watches its config's directory, and logs or a prompt log written
    # there would wake the watcher.
    conf = tmp / "conf"
    conf.mkdir()
    (conf / "gateway.yaml").write_text(gateway_conf(upstream))
    (conf / "minimal.yaml").write_text(minimal_conf(upstream))
    (conf / "logged.yaml").write_text(
        gateway_conf(upstream).replace(
            "providers:",
            f'prompt_log: {{path: "{tmp}/prompts.sqlite", mode: full, durability: strict}}\n'
            "providers:",
            1,
        )
    )
    bodies = {}
    for kind in KINDS:
        bodies[kind] = tmp / f"body-{kind}.json"
        bodies[kind].write_text(
            json.dumps(
                {
                    "model": MODELS.get(kind, f"bench-{kind}"),
                    "stream": kind in STREAMED,
                    "messages": [
                        {"role": "system", "content": "You are terse."},
                        {
                            "role": "user",
                            "content": "Say hello twenty times."
                            + (" (@N@)" if kind == "semantic" else ""),
                        },
                    ],
                }
            )
        )
    nginx = subprocess.Popen(
        ["taskset", "-c", "0", "nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(up_port)
    results: list[Result] = []
    rss = {"baseline": 0.0, "gateway": 0.0, "minimal": 0.0}
    rss_now: list[float] = []  # the gateway's RSS after each of its runs: flat or growing?
    try:
        # Both proxies run for the whole benchmark, pinned to the same core; only the
        # one under load uses it. Each scenario measures direct, baseline and gateway
        # back to back, so drifting machine noise hits all three alike.
        baseline = Proc(
            [
                sys.executable,
                str(HERE / "baseline_proxy.py"),
                str(base_port),
                upstream,
                args.baseline_client,
            ],
            base_port,
            tmp / "baseline.log",
        )

        def serve(config: str, port: int, python: str = sys.executable) -> Proc:
            args = ["serve", "--config", str(conf / config), "--host", "127.0.0.1"]
            command = [python, "-m", "aigateway", *args, "--port", str(port)]
            return Proc(command, port, tmp / f"{config}-{port}.log")

        gateway = serve("gateway.yaml", gw_port)
        logged = serve("logged.yaml", log_port)
        minimal = serve("minimal.yaml", min_port)
        compare = serve("gateway.yaml", cmp_port, args.compare) if args.compare else None
        targets = ("direct", "baseline", "gateway", *(("compare",) if compare else ()))
        try:
            for rnd in range(args.rounds):
                for kind in kinds:
                    for c in conns:
                        for target in targets:
                            # direct and baseline show the plain JSON or SSE path
                            path = "sse" if "sse" in kind else "json"
                            port = {"logged": log_port, "minimal_json": min_port,
                                    "minimal_sse": min_port}.get(kind, gw_port)  # fmt: skip
                            if target == "compare" and port != gw_port:
                                continue  # the other build serves the main config only
                            auth = {
                                "governed": GOV_KEY,
                                "guarded": GUARD_KEY,
                                "guarded_sse": GUARD_KEY,
                            }.get(kind, KEY)
                            vary = kind == "semantic"
                            url = {
                                "direct": f"{upstream}/{path}/v1/chat/completions",
                                "baseline": f"http://127.0.0.1:{base_port}/{path}"
                                "/v1/chat/completions",
                                "gateway": f"http://127.0.0.1:{port}/v1/chat/completions",
                                "compare": f"http://127.0.0.1:{cmp_port}/v1/chat/completions",
                            }[target]
                            wrk(url, bodies[kind], c, 1.0, auth, vary)  # warm-up
                            r = wrk(url, bodies[kind], c, args.duration, auth, vary)
                            r.target, r.kind = target, kind
                            results.append(r)
                            if target == "gateway" and port == gw_port:
                                rss_now.append(rss_mib(gateway.p.pid, "VmRSS"))
                            print(
                                f"round {rnd + 1} {kind:12} c={c:<3} {target:8} "
                                f"{r.rps:9.0f} rps  p50 {r.p50_ms:7.2f} ms  "
                                f"p99 {r.p99_ms:7.2f} ms  failed {r.failed}",
                                flush=True,
                            )
        finally:
            rss["baseline"] = baseline.stop()
            rss["gateway"] = gateway.stop()
            logged.stop()
            rss["minimal"] = minimal.stop()
            if compare is not None:
                rss["compare"] = compare.stop()
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(timeout=10)
    report(results, conns, rss)
    print("gateway RSS after each run (MiB): " + " ".join(f"{x:.0f}" for x in rss_now))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "results": [asdict(r) for r in results],
                    "peak_rss_mib": rss,
                    "gateway_rss_mib": rss_now,
                },
                indent=2,
            )
        )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(results: list[Result], conns: list[int], rss: dict[str, float]) -> None:
    def round_ratios(kind: str, c: int, target: str = "gateway") -> list[float]:
        """target/baseline of each round, each pair measured back to back."""
        g = [r.rps for r in results if (r.target, r.kind, r.connections) == (target, kind, c)]
        b = [r.rps for r in results if (r.target, r.kind, r.connections) == ("baseline", kind, c)]
        return [x / y for x, y in zip(g, b, strict=True)]

    def paired_ratio(kind: str, c: int) -> float:
        """Median over rounds of gateway/baseline."""
        ratios = round_ratios(kind, c)
        return statistics.median(ratios) if ratios else float("nan")

    def med(target: str, kind: str, c: int, field: str) -> float:
        vals = [
            getattr(r, field)
            for r in results
            if r.target == target and r.kind == kind and r.connections == c
        ]
        return statistics.median(vals) if vals else float("nan")

    print("\nmedians over rounds")
    print(
        f"{'kind':13}{'conns':>6}{'direct rps':>12}{'baseline rps':>14}{'gateway rps':>13}"
        f"{'gw/base':>9}{'gw p50 ms':>11}{'+p50 vs direct':>16}{'gw p99 ms':>11}"
        "  gw/base per round (the noise)"
    )
    for kind in KINDS:
        if not any(r.kind == kind for r in results):
            continue
        for c in conns:
            d, b, g = (med(t, kind, c, "rps") for t in ("direct", "baseline", "gateway"))
            gp50 = med("gateway", kind, c, "p50_ms")
            dp50 = med("direct", kind, c, "p50_ms")
            print(
                f"{kind:13}{c:>6}{d:>12.0f}{b:>14.0f}{g:>13.0f}{paired_ratio(kind, c):>9.2f}"
                f"{gp50:>11.2f}"
                f"{gp50 - dp50:>16.2f}{med('gateway', kind, c, 'p99_ms'):>11.2f}  "
                + " ".join(f"{x:.2f}" for x in round_ratios(kind, c))
            )
    if any(r.target == "compare" for r in results):
        print("\nthe other build (--compare), same runs: its RPS over the baseline's, and over")
        print("the first gateway's, per round")
        for kind in KINDS:
            for c in conns:
                if not any(
                    (r.target, r.kind, r.connections) == ("compare", kind, c) for r in results
                ):
                    continue  # (a scenario the main gateway does not serve)
                ratios = round_ratios(kind, c, "compare")
                mine = round_ratios(kind, c)
                over = [x / y for x, y in zip(ratios, mine, strict=True)]
                print(
                    f"{kind:13}{c:>6}  compare/base {statistics.median(ratios):.2f} "
                    f"({' '.join(f'{x:.2f}' for x in ratios)})  compare/gateway "
                    f"{statistics.median(over):.2f} ({' '.join(f'{x:.2f}' for x in over)})"
                )
    failover = [r for r in results if r.kind == "failover" and r.target == "gateway"]
    if failover:
        total = sum(r.requests for r in failover)
        bad = sum(r.failed for r in failover)
        extra = {
            c: med("gateway", "failover", c, "p50_ms") - med("gateway", "json", c, "p50_ms")
            for c in conns
        }
        added = ", ".join(f"c={c} {ms:+.2f} ms" for c, ms in extra.items())
        print(
            f"\nfailover (primary always 503, healthy fallback): success rate "
            f"{(total - bad) / total:.4%} of {total} requests; gateway p50 over its healthy "
            f"JSON route: {added}"
        )
    for kind, title in (
        ("governed", "governance chain (limits + budgets, memory state)"),
        ("logged", "prompt log (strict, full bodies)"),
        ("guarded", "guardrails (every detector, requests and answers)"),
        ("guarded_sse", "guardrails on streamed answers (every detector)"),
        ("cached", "cache hits"),
        ("semantic", "semantic cache hits (one embedding call each)"),
        ("minimal_json", "a config without limits, guardrails or caches anywhere"),
        ("minimal_sse", "a config without limits, guardrails or caches anywhere"),
    ):
        plain = PLAIN.get(kind, "json")
        if not any(r.kind == kind for r in results) or not any(r.kind == plain for r in results):
            continue  # (a feature is compared with its plain path only when both ran)
        parts = []
        for c in conns:
            ratio = med("gateway", kind, c, "rps") / med("gateway", plain, c, "rps")
            slower = med("gateway", kind, c, "p50_ms") - med("gateway", plain, c, "p50_ms")
            parts.append(f"c={c} {ratio:.2f}x rps, {slower:+.2f} ms p50")
        print(f"\n{title} vs the plain {plain.upper()} path: " + "; ".join(parts))
    failed = sum(r.failed for r in results if r.kind != "failover")
    print(
        f"\npeak RSS: baseline {rss['baseline']:.1f} MiB, gateway {rss['gateway']:.1f} MiB, "
        f"minimal gateway {rss['minimal']:.1f} MiB; "
        + (f"other build {rss['compare']:.1f} MiB; " if "compare" in rss else "")
        + f"failed requests: {failed}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
