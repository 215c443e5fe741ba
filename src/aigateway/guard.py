"""Guardrails: detectors for personal data, secrets and prompt injection, and what
to do about a hit (pure: text in, text and hits out).

Actions: ``off``; ``log`` (counted and recorded, text unchanged); ``redact`` (the
match becomes ``[REDACTED:<rule>]`` before the request leaves the gateway);
``block`` (the request is refused with 400 naming the rule, never the text).
Detectors share the prompt log's patterns (``redact``); card numbers must pass the
Luhn check and IBANs the mod-97 check, so look-alikes (order ids, timestamps) pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from aigateway.config.model import GatewayConfig, Guardrails
from aigateway.redact import CARD, EMAIL, EXACT_SECRETS, FOLDED_SECRETS, PHONE, luhn

IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])"
)
INJECTION = (
    r"\b(?:ignore|disregard|forget)\b.{0,20}\b(?:all|any|the|your)?\s*(?:previous|prior|above|earlier)\s+"
    r"(?:instructions|prompts?|rules|messages)",
    r"\byou are now\b.{0,30}\b(?:dan|developer mode|unrestricted|jailbroken)\b",
    r"\b(?:reveal|print|show|repeat)\b.{0,20}\b(?:your|the)\s+(?:system prompt|instructions)\b",
    r"\bjailbreak\b",
)
#: a word each of the ``INJECTION`` phrases has (in lower case): ASCII text with
#: none of them cannot match, and is not scanned (one search per word is cheaper
#: than the scan). Text that is not ASCII is always scanned: ignoring case, the
#: patterns match some other letters too (the Kelvin sign for "k", and so on).
INJECTION_WORDS = (
    "ignore", "disregard", "forget", "you are now", "reveal", "print", "show", "repeat",
    "jailbreak",
)  # fmt: skip
_INJECTION = re.compile("|".join(f"(?:{p})" for p in INJECTION), re.IGNORECASE | re.DOTALL)
BUILT_IN = ("email", "phone", "card", "iban", "ssn", "ip", "secrets")


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    moved = compact[4:] + compact[:4]
    digits = "".join(str(int(ch, 36)) for ch in moved)
    return 15 <= len(compact) <= 34 and int(digits) % 97 == 1


_DIGIT = re.compile(r"\d")
#: (start, end) of each match
Spans = list[tuple[int, int]]
#: rules whose every match has a digit: text without one is skipped at C speed
_NUMERIC = frozenset({"phone", "card", "iban", "ssn", "ip"})


def _spans(rule: str, text: str) -> Spans:
    """Where ``rule`` matches ``text`` (a list: this runs on every check of a stream)."""
    if rule == "email":
        return [m.span() for m in EMAIL.finditer(text)] if "@" in text else []
    if rule == "phone":
        return [m.span() for m in PHONE.finditer(text)]
    if rule == "card":
        return [m.span() for m in CARD.finditer(text) if luhn(re.sub(r"\D", "", m.group()))]
    if rule == "iban":
        return [m.span() for m in IBAN.finditer(text) if _iban_ok(m.group())]
    if rule == "ssn":
        return [m.span() for m in SSN.finditer(text)] if "-" in text else []
    if rule == "ip":
        return [m.span() for m in IPV4.finditer(text)] if "." in text else []
    if rule == "secrets":
        found = [m.span() for lit, p in EXACT_SECRETS if lit in text for m in p.finditer(text)]
        lower = text.lower()
        found += [m.span() for lit, p in FOLDED_SECRETS if lit in lower for m in p.finditer(text)]
        return found
    return []


class Blocked(Exception):
    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


@dataclass
class Rules:
    """Guardrails resolved for one key on one route."""

    #: (rule name, action, finder) in the order they run
    checks: list[tuple[str, str, Callable[[str], Spans]]]
    responses: bool = False
    #: streamed answers: characters held back while checked (redact and block rules)
    stream_window: int = 128

    #: some rule changes or stops what it finds (redact, block), not only logs it
    rewrites: bool = field(init=False)

    def _checks_for(self, text: str) -> list[tuple[str, str, Callable[[str], Spans]]]:
        """The checks that may match ``text`` (rules that need a digit skip text
        without one: one C-speed search instead of a regex pass each)."""
        if _DIGIT.search(text):
            return self.checks
        return self._without_digits

    def __post_init__(self) -> None:
        self.rewrites = any(action != "log" for _, action, _ in self.checks)
        self._without_digits = [
            check
            for check in self.checks
            if not (
                isinstance(check[2], partial)
                and check[2].func is _spans
                and check[2].args[0] in _NUMERIC
            )
        ]

    def find(self, text: str) -> list[tuple[int, int, str, str]]:
        """Every match in ``text``: (start, end, rule, action), rule by rule."""
        return [
            (s, e, rule, action)
            for rule, action, find in self._checks_for(text)
            for s, e in find(text)
        ]

    def scan(self, text: str, hits: list[tuple[str, str]]) -> str:
        """Apply every rule to ``text``: the text to send on; (rule, action) of each
        hit appended to ``hits``. Raises ``Blocked`` at the first blocking hit."""
        for rule, action, find in self._checks_for(text):
            spans = list(find(text))
            if not spans:
                continue
            hits.append((rule, action))
            if action == "block":
                raise Blocked(rule)
            if action == "redact":
                for start, end in reversed(spans):
                    text = text[:start] + f"[REDACTED:{rule}]" + text[end:]
        return text


def merge(*layers: Guardrails | None) -> Guardrails | None:
    """Project, then key, then route: later set fields win; patterns add up."""
    present = [g for g in layers if g is not None]
    if not present:
        return None
    values: dict[str, object] = {}
    patterns = []
    phrases: list[str] = []
    for layer in present:
        values.update(
            layer.model_dump(exclude_unset=True, exclude={"patterns", "injection_phrases"})
        )
        patterns += layer.patterns
        phrases += layer.injection_phrases
    return Guardrails.model_validate({**values, "patterns": patterns, "injection_phrases": phrases})


def _has_injection_word(lower: str) -> bool:
    """Whether lower-cased ASCII text holds a word every built-in phrase has (the
    text lower-cased once, not per word: this runs on every check of a stream)."""
    return any(word in lower for word in INJECTION_WORDS)


def _injection(phrases: re.Pattern[str] | None, text: str) -> Spans:
    """Where the built-in injection phrases, then the configured ones, match."""
    found: Spans = []
    if not text.isascii() or _has_injection_word(text.lower()):
        found = [m.span() for m in _INJECTION.finditer(text)]
    if phrases is not None:
        found += [m.span() for m in phrases.finditer(text)]
        found.sort()
    return found


def _finder(regex: re.Pattern[str]) -> Callable[[str], Spans]:
    def find(text: str) -> Spans:
        return [m.span() for m in regex.finditer(text)]

    return find


def compile_rules(config: Guardrails | None) -> Rules | None:
    """None when nothing is checked (the request path then skips guardrails)."""
    if config is None:
        return None
    checks: list[tuple[str, str, Callable[[str], Spans]]] = []
    for rule in BUILT_IN:
        action = getattr(config, rule)
        if action not in (None, "off"):
            checks.append((rule, action, partial(_spans, rule)))
    for pattern in config.patterns:
        if pattern.action != "off":
            checks.append((pattern.name, pattern.action, _finder(re.compile(pattern.regex))))
    if config.injection not in (None, "off"):
        phrases = (
            re.compile(
                "|".join(f"(?:{p})" for p in config.injection_phrases), re.IGNORECASE | re.DOTALL
            )
            if config.injection_phrases
            else None
        )
        checks.append(("injection", str(config.injection), partial(_injection, phrases)))
    if not checks:
        return None
    return Rules(
        checks, responses=bool(config.responses), stream_window=config.stream_window or 128
    )


def try_text(
    config: GatewayConfig,
    text: str,
    *,
    project: str | None = None,
    key: str | None = None,
    route: str | None = None,
) -> dict[str, object]:
    """What ``text`` would trigger for a project / key / route (the admin API and
    ``aigateway guardrails test``). The result holds rule names and actions and the
    text as it would be sent on; never a list of what matched."""
    key_cfg = next((k for k in config.keys if k.id == key), None)
    if key is not None and key_cfg is None:
        raise ValueError(f"unknown key {key!r}")
    project = project or (key_cfg.project if key_cfg is not None else None)
    project_cfg = config.projects.get(project) if project is not None else None
    if project is not None and project_cfg is None:
        raise ValueError(f"unknown project {project!r}")
    route_cfg = config.models.get(route) if route is not None else None
    if route is not None and route_cfg is None:
        raise ValueError(f"unknown route {route!r}")
    rules = compile_rules(
        merge(
            project_cfg.guardrails if project_cfg is not None else None,
            key_cfg.guardrails if key_cfg is not None else None,
            route_cfg.guardrails if route_cfg is not None else None,
        )
    )
    hits: list[tuple[str, str]] = []
    blocked = None
    out = text
    if rules is not None:
        try:
            out = rules.scan(text, hits)
        except Blocked as exc:
            blocked, out = exc.rule, ""
    return {
        "hits": [{"rule": rule, "action": action} for rule, action in hits],
        "blocked": blocked,
        "text": out,
    }
