"""The in-process benchmark runs every scenario through the real chain."""

from __future__ import annotations

import math

import pytest
from benchmarks import inprocess

from aigateway.tokens import Tokenizer


@pytest.mark.parametrize("kind", inprocess.KINDS)
async def test_each_scenario_runs_and_reports_its_cost(kind: str, tokenizer: Tokenizer) -> None:
    # (a request answered with an error, or a row not committed, raises)
    wall, cpu = await inprocess.measure(kind, 64, 1, tokenizer)
    assert 0 < wall < math.inf and 0 < cpu < math.inf
