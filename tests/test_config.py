"""The config loader: every kind of bad file names its YAML path (and line)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from aigateway.config.load import load_config, parse_config
from aigateway.config.model import MockProvider, OpenAIProvider
from aigateway.errors import ConfigError
from tests.conftest import ROOT

DIGEST = "a" * 64
BASE = """\
version: 1
providers:
  openai: {type: openai, api_key: "${OPENAI_KEY}"}
  demo: {type: mock}
models:
  fast:
    targets:
      - {provider: demo, model: m}
      - {provider: openai, model: gpt-4o-mini}
projects:
  acme: {models: [fast]}
keys:
  - {id: k1, project: acme, sha256: "DIGEST"}
""".replace("DIGEST", DIGEST)
ENV = {"OPENAI_KEY": "sk-test"}


def load(text: str, env: dict[str, str] | None = None, base_dir: Path = Path(".")):
    return parse_config(
        textwrap.dedent(text).encode(), env=ENV if env is None else env, base_dir=base_dir
    ).config


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, env)
    return info.value.problems


def test_example_config_validates() -> None:
    loaded = load_config(ROOT / "gateway.yaml.example", env={})
    assert "fast" in loaded.config.models
    assert isinstance(loaded.config.providers["demo"], MockProvider)
    assert len(loaded.sha256) == 64


def test_base_config_loads_and_hides_secrets() -> None:
    cfg = load(BASE)
    provider = cfg.providers["openai"]
    assert isinstance(provider, OpenAIProvider)
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(cfg)


BAD = [
    (
        "unknown provider in a target",
        BASE.replace("{provider: openai, model: gpt-4o-mini}", "{provider: gemni, model: g}"),
        "models.fast.targets[1].provider (line 9): unknown provider 'gemni'",
    ),
    (
        "typo suggestion",
        BASE.replace("{provider: demo, model: m}", "{provider: dmeo, model: m}"),
        "did you mean 'demo'?",
    ),
    (
        "unknown key",
        BASE.replace("version: 1", "version: 1\nsevrer: {port: 1}"),
        "sevrer (line 2): unknown key",
    ),
    (
        "unknown nested key",
        BASE.replace("{type: mock}", "{type: mock, colour: red}"),
        "providers.demo.colour (line 4): unknown key",
    ),
    (
        "unknown provider type",
        BASE.replace("{type: mock}", "{type: anthropc}"),
        "providers.demo (line 4): unknown type",
    ),
    ("wrong version", BASE.replace("version: 1", "version: 2"), "version (line 1)"),
    (
        "missing version",
        BASE.replace("version: 1\n", ""),
        "version (line 1): required key is missing",
    ),
    ("no models", BASE.split("models:")[0] + "models: {}\n", "models (line 5)"),
    (
        "no targets",
        BASE.replace(
            """    targets:
      - {provider: demo, model: m}
      - {provider: openai, model: gpt-4o-mini}""",
            "    targets: []",
        ),
        "models.fast.targets (line 7)",
    ),
    (
        "bad port",
        "version: 1\nserver: {port: 70000}\n" + BASE.split("\n", 1)[1],
        "server.port (line 2)",
    ),
    (
        "negative number",
        BASE.replace("{type: mock}", "{type: mock, latency_ms: -5}"),
        "providers.demo.latency_ms (line 4): Input should be greater than or equal to 0",
    ),
    (
        "unset env var",
        BASE,
        "providers.openai.api_key (line 3): environment variable OPENAI_KEY is not set",
    ),
    (
        "key names unknown project",
        BASE.replace("project: acme", "project: acme2"),
        "keys[0].project (line 13): unknown project 'acme2' (did you mean 'acme'?)",
    ),
    (
        "allow-list names unknown model",
        BASE.replace("models: [fast]", "models: [fats]"),
        "projects.acme.models[0] (line 11): unknown model 'fats'",
    ),
    ("bad digest", BASE.replace(DIGEST, "abc"), "keys[0].sha256 (line 13): must be 64"),
    (
        "duplicate key id",
        BASE + f'  - {{id: k1, project: acme, sha256: "{"b" * 64}"}}\n',
        "keys[1].id (line 14): duplicate key id",
    ),
    (
        "duplicate digest",
        BASE + f'  - {{id: k2, project: acme, sha256: "{DIGEST}"}}\n',
        "keys[1].sha256 (line 14): the same digest as keys[0]",
    ),
    (
        "duplicate YAML key",
        BASE.replace("  demo: {type: mock}", "  demo: {type: mock}\n  demo: {type: mock}"),
        "line 5, column 3): duplicate key 'demo'",
    ),
    (
        "YAML boolean as id",
        BASE.replace("id: k1", "id: off"),
        "keys[0].id (line 13): must be a string; quote it",
    ),
    ("syntax error", BASE.replace("models:", "models: [\n"), "line"),
    (
        "naive expiry",
        BASE.replace("sha256:", "expires_at: 2027-01-01T00:00:00, sha256:"),
        "keys[0].expires_at (line 13): must carry a time zone",
    ),
    (
        "redis without url",
        BASE.replace("version: 1", "version: 1\nstate: {backend: redis}"),
        "state (line 2): backend 'redis' needs 'url'",
    ),
    (
        "budget without limit",
        BASE.replace("models: [fast]}", "models: [fast], budgets: [{window: day}]}"),
        "projects.acme.budgets[0] (line 11): a budget needs",
    ),
    (
        "unknown retry policy",
        BASE.replace("  fast:\n", "  fast:\n    retry: nope\n"),
        "models.fast.retry (line 7): unknown retry policy 'nope'",
    ),
    (
        "bad base_url",
        BASE.replace("{type: openai,", '{type: openai, base_url: "ftp://x",'),
        "providers.openai.base_url (line 3): must be an http",
    ),
    ("not a mapping", "- 1\n- 2\n", "the top level must be a mapping"),
    ("empty", "", "the file is empty"),
    ("bad route name", BASE.replace("  fast:\n", "  'fa st':\n"), "models.fa st"),
    (
        "provider_keys unknown provider",
        BASE.replace("models: [fast]}", 'models: [fast], provider_keys: {opena: "x"}}'),
        "projects.acme.provider_keys.opena (line 11): unknown provider 'opena'",
    ),
    (
        "guardrail pattern that is not a regular expression",
        BASE.replace(
            "models: [fast]}", 'models: [fast], guardrails: {patterns: [{name: x, regex: "a("}]}}'
        ),
        "projects.acme.guardrails.patterns[0].regex (line 11): not a regular expression",
    ),
    (
        "cache on redis without redis state",
        BASE.replace("version: 1", "version: 1\ncache: {backend: redis}"),
        "cache.backend (line 2): 'redis' uses state's Redis",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_path(name: str, text: str, expected: str) -> None:
    env: dict[str, str] | None = {} if name == "unset env var" else None
    found = problems(text, env)
    assert any(expected in p for p in found), found


def test_all_problems_are_reported_at_once() -> None:
    text = BASE.replace("{type: mock}", "{type: mock, colour: red}").replace(
        "project: acme", "project: nope"
    )
    found = problems(text)
    assert any("colour" in p for p in found)
    # cross-reference checks run only on a structurally valid file
    text = BASE.replace("project: acme", "project: nope").replace(
        "models: [fast]", "models: [fats]"
    )
    assert len(problems(text)) == 2


def test_env_default_and_file_secrets(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("sk-from-file\n")
    text = BASE.replace('"${OPENAI_KEY}"', '"file:key.txt"').replace(
        "{type: mock}", '{type: mock, reply: "${GREETING:-hello}"}'
    )
    cfg = load(text, env={}, base_dir=tmp_path)
    openai = cfg.providers["openai"]
    demo = cfg.providers["demo"]
    assert isinstance(openai, OpenAIProvider) and isinstance(demo, MockProvider)
    assert openai.api_key is not None and openai.api_key.get_secret_value() == "sk-from-file"
    assert demo.reply == "hello"


def test_missing_secret_file(tmp_path: Path) -> None:
    text = BASE.replace('"${OPENAI_KEY}"', '"file:/nonexistent/key"')
    with pytest.raises(ConfigError) as info:
        load(text, env={}, base_dir=tmp_path)
    assert info.value.problems == [
        "providers.openai.api_key (line 3): secret file '/nonexistent/key': "
        "No such file or directory"
    ]


def test_file_prefix_only_applies_to_secret_fields() -> None:
    cfg = load(BASE.replace("{type: mock}", '{type: mock, reply: "file:/etc/passwd"}'))
    demo = cfg.providers["demo"]
    assert isinstance(demo, MockProvider) and demo.reply == "file:/etc/passwd"


def test_unreadable_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/gateway.yaml", env={})
    assert "cannot read" in info.value.problems[0]


def test_secret_values_never_in_errors() -> None:
    text = BASE.replace("version: 1", "version: 1\nstate: {backend: redis, url: 5}")
    found = problems(text, env={"OPENAI_KEY": "sk-very-secret-value"})
    assert not any("sk-very-secret-value" in p for p in found)


@pytest.mark.parametrize("which", ["gateway_conf", "minimal_conf"])
def test_the_benchmarks_configs_are_valid(which: str) -> None:
    import benchmarks.run as bench

    text = getattr(bench, which)("http://127.0.0.1:9")
    config = parse_config(text.encode(), env={}, base_dir=Path(".")).config
    assert {"bench-json", "bench-sse"} <= set(config.models)
    if which == "minimal_conf":  # nothing but the plain routes
        assert not any(r.cache or r.guardrails for r in config.models.values())
        assert not any(p.guardrails or p.budgets or p.rate_limits for p in config.projects.values())
