"""The benchmark's report: every table it prints, from results of each shape."""

from __future__ import annotations

import benchmarks.run as bench
import pytest


def results(kinds: dict[str, tuple[str, ...]], rounds: int = 2) -> list[bench.Result]:
    out = []
    for _ in range(rounds):
        for kind, targets in kinds.items():
            for c in (1, 32):
                for target, rps in zip(targets, (40000.0, 8000.0, 5000.0, 5500.0), strict=False):
                    out.append(bench.Result(target, kind, c, int(rps * 5), rps, 1.0, 2.0, 0))
    return out


def test_the_report_with_another_build_measured_on_some_scenarios(
    capsys: pytest.CaptureFixture[str],
) -> None:
    full = ("direct", "baseline", "gateway", "compare")
    plain = ("direct", "baseline", "gateway")  # served by a gateway --compare does not run
    found = results({"json": full, "sse": full, "minimal_json": plain, "failover": plain})
    rss = {"baseline": 45.0, "gateway": 140.0, "minimal": 70.0, "compare": 138.0}
    bench.report(found, [1, 32], rss)
    out = capsys.readouterr().out
    assert "json              1  compare/base 0.69 (0.69 0.69)  compare/gateway 1.10" in out
    assert "minimal_json" in out.split("--compare")[0]  # in the main table only
    assert "minimal_json" not in out.split("--compare")[1].split("failover")[0]
    assert "other build 138.0 MiB" in out and "success rate 100.0000%" in out


def test_a_feature_is_compared_with_its_plain_path_only_when_both_ran(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = ("direct", "baseline", "gateway")
    rss = {"baseline": 45.0, "gateway": 140.0, "minimal": 70.0}
    bench.report(results({"sse": plain, "governed": plain, "guarded_sse": plain}), [1, 32], rss)
    out = capsys.readouterr().out
    assert "nan" not in out
    assert "guardrails on streamed answers (every detector) vs the plain SSE path" in out
    assert "governance chain" not in out  # its plain path (JSON) did not run
