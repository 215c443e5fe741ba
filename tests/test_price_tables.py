"""Price tables drawn out of genai-prices: the same prices as genai-prices' own
calculation for every model it knows, the same model for every name, and the
child process that keeps genai-prices out of the gateway."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices import data_snapshot
from openai import AsyncOpenAI

from aigateway import price_export
from aigateway.price_table import PriceTable, Rates, TableError, parse_tables
from aigateway.pricing import PriceBook, PriceTables, price_problems, price_sources
from aigateway.usage import Usage
from tests.conftest import KEY, GatewayFactory

SNAPSHOT = data_snapshot.get_snapshot()
PROVIDER_IDS = [p.id for p in SNAPSHOT.providers]
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

#: prompt sizes around common tier starts, with cache reads and writes and output
USAGES = [
    Usage(0, 0),
    Usage(1000, 500),
    Usage(1000, 500, cached_tokens=400),
    Usage(300, 20, cache_write_tokens=100),
    Usage(128_000, 7),
    Usage(128_001, 7, cached_tokens=5),
    Usage(200_000, 1000, cached_tokens=1000, cache_write_tokens=500),
    Usage(200_001, 1000, cached_tokens=1000, cache_write_tokens=500),
    Usage(1_500_000, 33_333, cached_tokens=700_000),
]


@pytest.fixture(scope="module")
def export() -> dict[str, Any]:
    return price_export.export(PROVIDER_IDS)


@pytest.fixture(scope="module")
def tables(export: dict[str, Any]) -> dict[str, PriceTable]:
    parsed = parse_tables(export)
    assert all(isinstance(t, PriceTable) for t in parsed.values())
    return {k: t for k, t in parsed.items() if isinstance(t, PriceTable)}


def genai_cost(provider: str, model: str, usage: Usage, at: datetime) -> Decimal:
    price: Decimal = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.prompt_tokens,
            cache_read_tokens=usage.cached_tokens or None,
            cache_write_tokens=usage.cache_write_tokens or None,
            output_tokens=usage.completion_tokens,
        ),
        model,
        provider_id=provider,
        genai_request_timestamp=at,
    ).total_price
    return price


def moments(model: Any) -> list[datetime]:
    """NOW, and either side of every change of price the model's constraints make."""
    found = [NOW]
    prices = model.prices if isinstance(model.prices, list) else []
    for conditional in prices:
        c = conditional.constraint
        if c is None:
            continue
        if hasattr(c, "start_date"):
            day = datetime(c.start_date.year, c.start_date.month, c.start_date.day, tzinfo=UTC)
            found += [day, day - timedelta(seconds=1)]
        else:
            for t in (c.start_time, c.end_time):
                at = datetime.combine(NOW.date(), t)
                at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
                found += [at, at - timedelta(seconds=1)]
    return found


def test_every_model_has_rates(export: dict[str, Any]) -> None:
    problems = [
        (source, m["id"], m["error"])
        for source, table in export["tables"].items()
        for m in table["models"]
        if "error" in m
    ]
    assert problems == []
    assert sum(len(t["models"]) for t in export["tables"].values()) > 2000


def test_costs_equal_genai_prices_for_every_model(tables: dict[str, PriceTable]) -> None:
    checked = 0
    for provider in SNAPSHOT.providers:
        table = tables[provider.id]
        for model in table.models:
            try:
                _, genai_model = SNAPSHOT.find_provider_model(model.id, None, provider.id, None)
            except LookupError:
                continue  # a model its own id does not name (the next test covers names)
            for at in moments(genai_model):
                rates = table.rates(model.id, at)
                assert rates is not None, (provider.id, model.id)
                for usage in USAGES:
                    expected = genai_cost(provider.id, model.id, usage, at)
                    assert rates.cost(usage) == expected, (provider.id, model.id, usage, at)
                    checked += 1
    assert checked > 15_000


def _clause_texts(clause: dict[str, Any]) -> Iterator[str]:
    for kind, arg in clause.items():
        if kind in ("or", "and"):
            for part in arg:
                yield from _clause_texts(part)
        elif kind != "regex":
            yield arg


def test_every_name_finds_the_model_genai_prices_finds(export: dict[str, Any]) -> None:
    tables = parse_tables(export)
    checked = 0
    for provider_id in PROVIDER_IDS:
        table = tables[provider_id]
        assert isinstance(table, PriceTable)
        names: set[str] = set()
        for model in export["tables"][provider_id]["models"]:
            names.add(model["id"])
            for text in _clause_texts(model["match"]):
                # dated (dashed and compact), prefixed, upper-cased, suffixed
                names |= {text, text + "-20250514", text + "-2025-05-14", "x-" + text}
                names |= {text.upper(), text + ":free", text + "-20251399"}
        for name in sorted(names):
            try:
                expected = SNAPSHOT.find_provider_model(name, None, provider_id, None)[1].id
            except LookupError:
                expected = None
            found = table.find(name)
            assert (found.id if found else None) == expected, (provider_id, name)
            checked += 1
    assert checked > 20_000


def test_a_base_url_finds_the_provider_genai_prices_finds() -> None:
    urls = {
        "https://api.openai.com/v1": "openai",
        "https://api.anthropic.com/v1": "anthropic",
        "https://myres.openai.azure.com/openai": "azure",
        "https://generativelanguage.googleapis.com/v1beta": "google",
    }
    parsed = parse_tables(price_export.export([*urls, "https://llm.example.com/v1"]))
    for url, provider_id in urls.items():
        table = parsed[url]
        assert isinstance(table, PriceTable) and table.provider == provider_id
    assert parsed["https://llm.example.com/v1"] == "genai-prices knows no provider at this base URL"


def test_an_unknown_provider_id_says_so() -> None:
    parsed = parse_tables(price_export.export(["opnai"]))
    assert parsed["opnai"] == "genai-prices has no provider 'opnai'"


def tier(above: int, *rates: Any) -> list[Any]:
    return [above, *rates]


TIERED = {
    "provider": "p",
    "models": [
        {
            "id": "m",
            "match": {"or": [{"equals": "m"}, {"starts_with": "m-20"}]},
            "prices": [
                {"when": None, "tiers": [tier(-1, "0", "1", "0.1", "1.25", "2")]},
                {
                    "when": {"from": "2026-06-01"},
                    "tiers": [
                        tier(-1, "0.001", "2", "0.2", "2.5", "4"),
                        tier(1000, "0.001", "4", "0.4", "5", "8"),
                    ],
                },
                {"when": {"daily": ["23:00:00", "01:00:00"]}, "tiers": [tier(-1, *"00000")]},
            ],
        },
        {"id": "broken", "match": {"contains": "broken"}, "error": "not linear"},
    ],
}


@pytest.mark.parametrize(
    ("model", "at", "usage", "dollars"),
    [
        ("m", "2026-05-31T12:00", Usage(1000, 100), "0.0012"),  # the first price
        ("m-2026-01-01", "2026-06-01T02:00", Usage(1000, 100), "0.0034"),  # from 1 June
        ("M", "2026-06-01T12:00", Usage(1001, 100), "0.005804"),  # prompt over 1000: tier 2
        ("m", "2026-06-01T12:00", Usage(1001, 100, cached_tokens=1), "0.0058004"),
        ("m", "2026-06-01T23:30", Usage(1001, 100), "0"),  # nightly, across midnight
        ("m", "2026-06-02T00:59", Usage(1001, 100), "0"),
        ("m", "2026-06-02T01:00", Usage(1001, 100), "0.005804"),
        ("m", "2026-05-31T22:59", Usage(0, 0, cache_write_tokens=0), "0"),
    ],
)
def test_a_table_prices_by_moment_and_prompt_size(model, at, usage, dollars) -> None:
    table = PriceTable.parse(TIERED)
    rates = table.rates(model, datetime.fromisoformat(at).replace(tzinfo=UTC))
    assert rates is not None
    assert rates.cost(usage) == Decimal(dollars)


def test_worst_case_covers_every_tier() -> None:
    rates = PriceTable.parse(TIERED).rates("m", datetime(2026, 7, 1, 12, tzinfo=UTC))
    assert rates is not None and rates.worst_case() == (Decimal(5), Decimal(8))
    flat = Rates(Decimal(1), Decimal(2), Decimal(0), Decimal(3))
    assert flat.worst_case() == (Decimal(3), Decimal(2))  # a cache write costs the most


def test_a_model_without_rates_and_an_unknown_one_are_unpriced() -> None:
    table = PriceTable.parse(TIERED)
    assert table.rates("broken-1") is None
    assert table.rates("other") is None


BAD_TABLES = [
    {"models": []},
    {"provider": "p", "models": {}},
    {"provider": "p", "models": [{"match": {"equals": "x"}, "prices": []}]},
    {"provider": "p", "models": [{"id": "x", "match": {"equals": "x"}, "prices": []}]},
    {"provider": "p", "models": [{"id": "x", "match": {"like": "x"}, "prices": []}]},
    {"provider": "p", "models": [{"id": "x", "match": {"or": []}, "prices": []}]},
    {"provider": "p", "models": [{"id": "x", "match": {"equals": 3}, "prices": []}]},
    {"provider": "p", "models": [{"id": "x", "match": "x", "prices": []}]},
]


def _priced(*tiers: Any, when: Any = None) -> dict[str, Any]:
    return {
        "provider": "p",
        "models": [
            {"id": "x", "match": {"equals": "x"}, "prices": [{"when": when, "tiers": tiers}]}
        ],
    }


BAD_TABLES += [
    _priced(),
    _priced(tier(0, "0", "1", "1", "1", "1")),  # the first tier starts at -1
    _priced(tier(-1, "0", "1", "1", "1")),  # five rates
    _priced(tier(-1, "0", "1", "1", "1", "-1")),  # negative
    _priced(tier(-1, "0", "1", "1", "1", "NaN")),
    _priced(tier(-1, "0", "1", "1", "1", 1.5)),  # a float, not a decimal string
    _priced(tier(-1, *"00000"), tier(-1, *"00000")),  # tiers go up
    _priced(tier(-1, *"00000"), when={"until": "2026-01-01"}),
    _priced(tier(-1, *"00000"), when={"daily": ["25:00:00", "01:00"]}),
    _priced(tier(-1, *"00000"), when={"daily": "12:00"}),
]


@pytest.mark.parametrize("raw", BAD_TABLES)
def test_a_malformed_table_is_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(TableError):
        parse_tables({"format": 1, "tables": {"s": raw}})


def test_an_export_of_another_format_is_refused() -> None:
    with pytest.raises(TableError):
        parse_tables({"format": 2, "tables": {}})


def test_an_unreadable_export_leaves_every_source_unpriced() -> None:
    tables = PriceTables(loader=lambda sources: ({"format": 1, "tables": {"a": []}}, None))
    assert tables.ensure(["a", "b"]) is not None
    assert isinstance(tables.get("a"), str) and isinstance(tables.get("b"), str)


# --- the child process -------------------------------------------------------------

OPENAI = "https://api.openai.com/v1"


def test_the_gateway_prices_public_providers_without_importing_genai_prices() -> None:
    code = (
        "import sys, time; from aigateway.pricing import PriceBook, PriceTables; "
        "from aigateway.usage import Usage; t = PriceTables(); "
        f"assert t.ensure([{OPENAI!r}, 'anthropic']) is None; "
        "b = PriceBook({}, clock=time.monotonic, on_unpriced=print, tables=t); "
        f"print(b.cost('o', {OPENAI!r}, 'gpt-4o-2024-08-06', Usage(1000, 500))); "
        "print(b.cost('a', 'anthropic', 'claude-sonnet-4-5', Usage(300000, 10))); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'genai_prices', 'httpx2'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    # 1000 x 2.5 + 500 x 10; 300,000 x 6 + 10 x 22.5 (the long-context tier), per million
    assert done.stdout.split("\n")[:3] == ["0.0075", "1.800225", "[]"]


def test_the_child_gets_sources_on_stdin_not_on_its_command_line(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    fake = tmp_path / "python"
    fake.write_text(
        f'#!/bin/sh\necho "$@" > {seen}\ncat >> {seen}\necho \'{{"format": 1, "tables": {{}}}}\'\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    secret_url = "https://user:hunter2@api.openai.com/v1"
    export, problem = price_export.load([secret_url], python=str(fake))
    assert problem is None and export == {"format": 1, "tables": {}}
    argv, stdin = seen.read_text().split("\n", 1)
    assert "hunter2" not in argv
    assert json.loads(stdin) == [secret_url]


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (None, "FileNotFoundError"),
        ("echo 'boom at https://user:hunter2@api.openai.com' >&2; exit 3", "exit status 3"),
        ("echo not json", "unreadable output"),
        ("echo '[1]'", "unreadable output"),
    ],
)
def test_when_the_child_fails_the_export_runs_here(tmp_path: Path, script, reason) -> None:
    fake = tmp_path / "python"
    if script is not None:
        fake.write_text(f"#!/bin/sh\ncat > /dev/null\n{script}\n")
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    export, problem = price_export.load([OPENAI], python=str(fake))
    assert problem is not None and reason in problem and "hunter2" not in problem
    table = parse_tables(export)[OPENAI]
    assert isinstance(table, PriceTable) and table.provider == "openai"


# --- price_as ----------------------------------------------------------------------


def up_priced_as(provider: str) -> Any:
    return lambda text: text.replace(
        "up: {type: openai,", f"up: {{type: openai, price_as: {provider},"
    )


async def test_price_as_prices_a_private_url_from_a_public_list(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(edit=up_priced_as("openai"))
    async with AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    # the upstream says gpt-4o-2024-08-06 served it: 10 x $2.5 + 2 x $10, per million
    assert raw.headers["x-aigateway-cost-usd"] == "0.000045"


async def test_an_unknown_price_as_is_logged_with_its_path(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(edit=up_priced_as("opnai"))
    async with AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert "x-aigateway-cost-usd" not in raw.headers  # unpriced, still answered
    errors = [json.loads(x) for x in gw.log.getvalue().splitlines() if "unpriced" in x]
    assert any(
        e.get("problem") == "providers.up.price_as: genai-prices has no provider 'opnai'"
        for e in errors
    )


def test_check_refuses_an_unknown_price_as(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "version: 1\nproviders:\n  m: {type: mock, price_as: opnai}\n"
        "models:\n  x: {targets: [{provider: m, model: gpt-4o}]}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "aigateway", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    assert done.returncode == 1
    assert "providers.m.price_as: genai-prices has no provider 'opnai'" in done.stderr


def test_price_sources_of_a_config() -> None:
    from aigateway.config.load import parse_config

    loaded = parse_config(
        b"version: 1\nproviders:\n"
        b"  o: {type: openai}\n"
        b"  o2: {type: openai, base_url: 'https://api.openai.com/v1'}\n"
        b"  local: {type: openai, base_url: 'http://vllm:8000/v1'}\n"
        b"  proxied: {type: openai, base_url: 'http://egress:3128/v1', price_as: openai}\n"
        b"  m: {type: mock}\n"
        b"  mp: {type: mock, price_as: anthropic}\n"
        b"models:\n  x: {targets: [{provider: m, model: a}]}\n",
        env={},
        base_dir=Path("."),
    )
    assert price_sources(loaded.config) == ["https://api.openai.com/v1", "openai", "anthropic"]
    tables = PriceTables(loader=lambda s: (price_export.export(s), None))
    assert price_problems(loaded.config, tables) == []
    book = PriceBook({}, clock=lambda: 0.0, on_unpriced=lambda p, m: None, tables=tables)
    assert book.cost("mp", "anthropic", "claude-sonnet-4-5", Usage(1000, 0)) == Decimal("0.003")
