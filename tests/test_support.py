"""What a config does not keep is announced, never silently ignored."""

from __future__ import annotations

from pathlib import Path

from aigateway.config.load import parse_config
from aigateway.config.support import unenforced

CONFIG = """\
version: 1
providers: {demo: {type: mock}}
models: {m: {targets: [{provider: demo, model: m}]}}
projects:
  p: {rate_limits: {rpm: 1}, budgets: [{window: day, usd: 1}], prompt_log: metadata}
keys:
  - {id: k, project: p, sha256: "%s", rate_limits: {rpm: 1}}
""" % ("a" * 64)


def test_every_unenforced_setting_is_announced() -> None:
    config = parse_config(CONFIG.encode(), env={}, base_dir=Path(".")).config
    warnings = unenforced(config)
    for fragment in (
        "state.backend: with 'memory' and no prompt_log",  # not kept across restarts
    ):
        assert any(w.startswith(fragment) for w in warnings), (fragment, warnings)


MINIMAL = """\
version: 1
providers: {demo: {type: mock}}
models: {m: {targets: [{provider: demo, model: m}], retry: r}}
retry_policies: {r: {attempts: 2}}
pricing: {m: {input_per_mtok: 1, output_per_mtok: 1}}
state: {backend: redis, url: "redis://127.0.0.1:1/0"}
projects:
  p: {models: [m], rate_limits: {rpm: 1}, budgets: [{window: day, usd: 1}]}
"""


def test_nothing_to_announce_for_what_works() -> None:
    config = parse_config(MINIMAL.encode(), env={}, base_dir=Path(".")).config
    assert unenforced(config) == []
