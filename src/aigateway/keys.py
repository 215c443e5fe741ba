"""Gateway keys: generation, digests and lookup.

Keys are never stored: the config holds their SHA-256 digests and a request's key
is looked up by its digest (a dict lookup, so no timing side channel on the key's
characters). Unknown, expired and disabled keys are indistinguishable to callers.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from aigateway.config.model import Key, Project

KEY_PREFIX = "aig-"
MAX_KEY_CHARS = 512


def new_key() -> str:
    """A fresh key: 256 random bits, URL-safe, recognisable by its prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>`` or ``x-api-key``."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return value
    api_key = headers.get("x-api-key")
    if api_key:
        return api_key.strip() or None
    return None


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its key, project, and the routes it may use."""

    key: Key
    project_name: str
    project: Project
    #: route names this key may use; None = every route
    allowed: frozenset[str] | None

    def may_use(self, route: str) -> bool:
        return self.allowed is None or route in self.allowed


class KeyIndex:
    def __init__(self, keys: Iterable[Key], projects: Mapping[str, Project]) -> None:
        self._by_digest: dict[str, Principal] = {}
        for key in keys:
            project = projects[key.project]
            allowed: set[str] | None = None
            if project.models is not None:
                allowed = set(project.models)
            if key.models is not None:
                allowed = set(key.models) if allowed is None else allowed & set(key.models)
            self._by_digest[key.sha256] = Principal(
                key, key.project, project, frozenset(allowed) if allowed is not None else None
            )

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, raw_key: str | None, now: datetime) -> Principal | None:
        if not raw_key or len(raw_key) > MAX_KEY_CHARS:
            return None
        principal = self._by_digest.get(digest(raw_key))
        if principal is None or principal.key.disabled:
            return None
        expires = principal.key.expires_at
        if expires is not None and now >= expires:
            return None
        return principal
