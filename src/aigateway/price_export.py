"""Draw compact price tables (``price_table``) out of genai-prices.

genai-prices holds ~2,300 models of ~60 providers as Python objects: importing
it costs a process ~5.3 MiB of RSS for good. The gateway needs the few
providers it is configured for, so :func:`load` runs :func:`export` in a
short-lived child process (``sys.executable``, ~0.6 s, at start-up and at a
reload that brings a new price source) and keeps only the JSON tables it
prints. When the child cannot run, the export runs in this process instead
(same tables, genai-prices' memory kept), and says so.

A model's rates are not read off genai-prices' price fields (their meaning, e.g.
which tokens a cache-write price covers, is genai-prices' business): they are
measured. For each tier of prompt sizes, the price of a few usages is asked of
genai-prices' own calculation, the per-bucket rates and the per-request fee
solved from them, and the result checked at more usages, exactly (``Decimal``).
A model whose prices those rates do not reproduce (none in genai-prices 0.2.3)
gets no rates, only the reason: it is unpriced.

``price source``: a base URL (the provider genai-prices finds by its
``api_pattern``) or a genai-prices provider id (``price_as:`` in gateway.yaml).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Final

from aigateway.price_table import FORMAT

#: the widest step between two measured prompt sizes (tokens)
_SPAN_CAP: Final = 1_000_000
CHILD_TIMEOUT_S: Final = 120.0
_CHILD = "from aigateway.price_export import main; main()"


def is_url(source: str) -> bool:
    return "://" in source


def export(sources: Iterable[str]) -> dict[str, Any]:
    """The tables of these price sources, as JSON data (``price_table`` format)."""
    import genai_prices
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    tables: dict[str, Any] = {}
    for source in sources:
        try:
            found = (
                snapshot.find_provider(None, None, source)
                if is_url(source)
                else data_snapshot.find_provider_by_id(snapshot.providers, source)
            )
            if found is None:
                raise LookupError(f"genai-prices has no provider {source!r}")
        except LookupError as exc:
            # (a URL is not echoed: it may hold credentials)
            tables[source] = {
                "error": "genai-prices knows no provider at this base URL"
                if is_url(source)
                else str(exc)
            }
            continue
        try:
            models = list(_models(found, snapshot))
        except TypeError as exc:  # a rule this module does not know: no order to trust
            tables[source] = {"error": str(exc)}
            continue
        tables[source] = {"provider": found.id, "models": models}
    return {"format": FORMAT, "genai_prices": genai_prices.__version__, "tables": tables}


def _models(provider: Any, snapshot: Any) -> Iterable[dict[str, Any]]:
    """The provider's models, then its fallback providers' (one step), in order."""
    yield from (_model(m) for m in provider.models)
    for fallback_id in provider.fallback_model_providers or ():
        fallback = next((p for p in snapshot.providers if p.id == fallback_id), None)
        if fallback is not None:
            yield from (_model(m) for m in fallback.models)


def _model(model: Any) -> dict[str, Any]:
    from genai_prices.types import ModelPrice

    entry: dict[str, Any] = {"id": model.id, "match": _clause(model.match)}
    conditional = (
        [(None, model.prices)]
        if isinstance(model.prices, ModelPrice)
        else [(c.constraint, c.prices) for c in model.prices]
    )
    try:
        entry["prices"] = [
            {"when": _constraint(when), "tiers": _tiers(price)} for when, price in conditional
        ]
    except (ValueError, ArithmeticError, LookupError, TypeError) as exc:
        return {"id": model.id, "match": entry["match"], "error": f"{type(exc).__name__}: {exc}"}
    if not entry["prices"]:
        return {"id": model.id, "match": entry["match"], "error": "no prices"}
    return entry


def _clause(clause: Any) -> dict[str, Any]:
    name = type(clause).__name__
    if name == "ClauseOr":
        return {"or": [_clause(c) for c in clause.or_]}
    if name == "ClauseAnd":
        return {"and": [_clause(c) for c in clause.and_]}
    for kind in ("equals", "starts_with", "ends_with", "contains", "regex"):
        if name == "Clause" + kind.title().replace("_", ""):
            return {kind: getattr(clause, kind)}
    raise TypeError(f"unknown genai-prices match clause {name}")


def _constraint(constraint: Any) -> dict[str, Any] | None:
    if constraint is None:
        return None
    name = type(constraint).__name__
    if name == "StartDateConstraint":
        return {"from": constraint.start_date.isoformat()}
    if name == "TimeOfDateConstraint":
        return {"daily": [_utc(constraint.start_time), _utc(constraint.end_time)]}
    raise TypeError(f"unknown genai-prices price constraint {name}")


def _utc(value: time) -> str:
    """A time of day as naive UTC text (genai-prices reads naive times as UTC)."""
    if value.tzinfo is not None:
        value = datetime.combine(date(1970, 1, 1), value).astimezone(UTC).time()
    return value.isoformat()


def _tiers(price: Any) -> list[list[Any]]:
    """Each tier of prompt sizes: [above, request, input, read, write, output]."""
    from genai_prices.types import TieredPrices

    starts = sorted(
        {
            tier.start
            for value in vars(price).values()
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        }
    )
    bounds = [-1, *starts]
    tiers = []
    for i, above in enumerate(bounds):
        top = bounds[i + 1] if i + 1 < len(bounds) else None
        tiers.append([above, *(_text(r) for r in _solve(price, above, top))])
    return tiers


def _text(value: Decimal) -> str:
    """A rate as plain decimal text: no exponent, no trailing zeros."""
    return format(value.normalize(), "f")


def _solve(price: Any, above: int, top: int | None) -> tuple[Decimal, ...]:
    """(request, input, cache_read, cache_write, output) of prompts of
    ``above`` < size <= ``top`` tokens, measured, then checked."""
    first = above + 1
    room = (top - first) if top is not None else _SPAN_CAP
    if room < 1:
        raise ValueError(f"a tier of prompts from {first} to {top} tokens is too narrow to measure")
    span: int = 10 ** (len(str(min(room, _SPAN_CAP))) - 1)  # a power of ten: exact quotients
    base = _price(price, first, 0, 0, 0)

    def slope(total: Decimal) -> Decimal:
        return (total - base) * 1_000_000 / span

    input_rate = slope(_price(price, first + span, 0, 0, 0))
    read = slope(_price(price, first + span, span, 0, 0))
    write = slope(_price(price, first + span, 0, span, 0))
    output = slope(_price(price, first, 0, 0, span))
    request = base - input_rate * first / 1_000_000
    last = top if top is not None else first + 3 * _SPAN_CAP
    for prompt, cached, written, out in (
        (last, last // 3, last // 5, 7_777),
        ((first + last) // 2, 0, (first + last) // 7, 123_457),
        (last, 0, 0, 1),
        (first, first, 0, 0),
    ):
        uncached = prompt - cached - written
        expected = (
            request
            + (uncached * input_rate + cached * read + written * write + out * output) / 1_000_000
        )
        got = _price(price, prompt, cached, written, out)
        if got != expected:
            raise ValueError(
                f"not linear in the tokens: {got} at prompt {prompt}, cached {cached}, "
                f"written {written}, output {out}, where its rates give {expected}"
            )
    return request, input_rate, read, write, output


def _price(price: Any, prompt: int, cached: int, written: int, output: int) -> Decimal:
    from genai_prices import Usage

    usage = Usage(
        input_tokens=prompt,
        cache_read_tokens=cached or None,
        cache_write_tokens=written or None,
        output_tokens=output,
    )
    total: Decimal = price.calc_price(usage)["total_price"]
    return Decimal(total)


def main() -> None:
    """The child's side: price sources as JSON on stdin, the export on stdout."""
    sources = json.load(sys.stdin)
    json.dump(export(sources), sys.stdout, separators=(",", ":"))


def load(sources: Sequence[str], *, python: str | None = None) -> tuple[dict[str, Any], str | None]:
    """The export of these sources, from a child process; run here instead when
    the child fails. Returns the export, and why the child failed (or None).

    Blocking (run it in a thread). Sources go through stdin: a base URL may hold
    credentials, and a command line is visible to every user of the host."""
    done, problem = _child(sources, python if python is not None else sys.executable)
    if done is not None:
        return done, None
    try:
        return export(sources), problem
    except Exception as exc:  # genai-prices itself is broken: nothing is priced
        reason = f"genai-prices failed: {type(exc).__name__}: {_scrub(str(exc))[:300]}"
        return {"format": FORMAT, "tables": {s: {"error": reason} for s in sources}}, problem


def _child(sources: Sequence[str], executable: str) -> tuple[dict[str, Any] | None, str]:
    try:
        done = subprocess.run(  # noqa: S603 (this interpreter, a fixed program)
            # -P: the working directory is not put on the child's import path
            [executable, "-P", "-c", _CHILD],
            input=json.dumps(list(sources)).encode(),
            capture_output=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return None, f"exit status {done.returncode}: {_scrub(tail[0])[:300]}"
    try:
        parsed = json.loads(done.stdout)
    except ValueError as exc:
        return None, f"unreadable output ({exc})"
    if not isinstance(parsed, dict):
        return None, "unreadable output (not an object)"
    return parsed, ""


_USERINFO = re.compile(r"://[^/@\s]*@")


def _scrub(text: str) -> str:
    """Credentials in a URL's user part, masked."""
    return _USERINFO.sub("://***@", text)
