"""Read gateway.yaml: YAML → secret references → typed model → cross-checks.

Every problem is reported as ``yaml.path (line N): message`` and all of them are
reported at once, so one run of ``aigateway check`` shows everything to fix.

Secret references:
- ``${NAME}`` anywhere in a string is replaced by the environment variable NAME
  (an unset variable is an error); ``${NAME:-default}`` falls back to ``default``.
- ``file:/path`` as the whole value of a secret field (``api_key``, the values of
  ``provider_keys``, ``state.url``) is replaced by the file's content without its
  trailing newline: how Kubernetes mounts Secrets. Relative paths are taken from
  the config file's directory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import yaml
from pydantic import ValidationError

from aigateway.config.model import GatewayConfig, Path
from aigateway.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_FIELDS = frozenset({"api_key"})
MAX_CONFIG_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class LoadedConfig:
    config: GatewayConfig
    #: SHA-256 of the file's bytes: names the version that is serving
    sha256: str
    source: str


def load_config(path: str | FsPath, env: Mapping[str, str]) -> LoadedConfig:
    fs_path = FsPath(path)
    try:
        raw = fs_path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse_config(raw, env=env, base_dir=fs_path.parent, source=str(path))


def parse_config(
    raw: bytes, *, env: Mapping[str, str], base_dir: FsPath, source: str = "<config>"
) -> LoadedConfig:
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{source}: larger than {MAX_CONFIG_BYTES} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 (byte {exc.start})"]) from None
    data, lines = _parse_yaml(text, source)
    problems: list[tuple[Path, str]] = []
    data = _resolve(data, (), env, base_dir, problems)
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(problems + _pydantic_problems(exc, data), lines)) from None
    problems += config.problems()
    if problems:
        raise ConfigError(_format(problems, lines))
    return LoadedConfig(config=config, sha256=hashlib.sha256(raw).hexdigest(), source=source)


# --- YAML with line numbers ------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in out
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([f"{source}: the file is empty"])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError([f"{source}{where}: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: {exc}"]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping (version: 1, ...)"])
    lines: dict[Path, int] = {}
    _index_lines(node, (), lines)
    return data, lines


def _index_lines(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*path, key_node.value)
                _index_lines(value_node, child, lines)
                lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines)


# --- secret references -----------------------------------------------------------------


def _resolve(
    value: Any, path: Path, env: Mapping[str, str], base_dir: FsPath, problems: list[Any]
) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, (*path, k), env, base_dir, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, (*path, i), env, base_dir, problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    if "${" in value:
        value = _interpolate(value, path, env, problems)
    if value.startswith("file:") and _is_secret_field(path):
        return _read_secret_file(value[5:], path, base_dir, problems)
    return value


def _interpolate(value: str, path: Path, env: Mapping[str, str], problems: list[Any]) -> str:
    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append((path, f"environment variable {name} is not set"))
        return ""

    return _ENV_REF.sub(sub, value)


def _is_secret_field(path: Path) -> bool:
    return bool(path) and (
        path[-1] in _SECRET_FIELDS
        or (len(path) >= 2 and path[-2] == "provider_keys")
        or path == ("state", "url")
    )


def _read_secret_file(name: str, path: Path, base_dir: FsPath, problems: list[Any]) -> str:
    file = FsPath(name)
    if not file.is_absolute():
        file = base_dir / file
    try:
        return file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        problems.append((path, f"secret file {str(file)!r}: {reason}"))
        return ""


# --- formatting ------------------------------------------------------------------------


def _pydantic_problems(exc: ValidationError, data: Any) -> list[tuple[Path, str]]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        path = _data_path(err["loc"], data)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif err["type"] == "string_type" and isinstance(_lookup(data, path), bool):
            message = "must be a string; quote it (YAML reads yes/no/on/off/true/false as booleans)"
        elif err["type"] == "string_pattern_mismatch":
            message = _PATTERN_HINTS.get(str(path[-1]) if path else "", _NAME_HINT)
        elif err["type"] == "union_tag_invalid":
            message = f"unknown type; expected one of {err['ctx']['expected_tags']}"
        out.append((path, message))
    return out


_NAME_HINT = "must be 1-128 characters: letters, digits and . _ : / @ + - (not first)"
_PATTERN_HINTS = {
    "sha256": "must be 64 lowercase hex characters (`aigateway keys new` prints one)",
    "key_sha256": "must be 64 lowercase hex characters (sha256sum of the admin key)",
    "base_url": "must be an http:// or https:// URL",
}


def _data_path(loc: tuple[int | str, ...], data: Any) -> Path:
    """Pydantic adds union branch names to ``loc``; keep only real steps into the data."""
    path: list[str | int] = []
    node = data
    for step in loc:
        child = _child(node, step)
        if child is not _MISSING:
            node = child
            path.append(step)
        elif isinstance(node, dict) and node.get("type") == step:
            continue  # a discriminated-union branch name
        elif isinstance(node, dict | list) and not (
            isinstance(step, str) and step.startswith(("function-", "lax-", "json-"))
        ):
            path.append(step)  # a required key that is missing
            node = None
    return tuple(path)


_MISSING = object()


def _lookup(data: Any, path: Path) -> Any:
    for step in path:
        data = _child(data, step)
    return data


def _child(node: Any, step: int | str) -> Any:
    if isinstance(node, dict) and step in node:
        return node[step]
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        return node[step]
    return _MISSING


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<top>"


def _format(problems: list[tuple[Path, str]], lines: dict[Path, int]) -> list[str]:
    out = []
    for path, message in problems:
        line = None
        for n in range(len(path), -1, -1):
            line = lines.get(path[:n])
            if line is not None:
                break
        where = f" (line {line})" if line else ""
        out.append(f"{format_path(path)}{where}: {message}")
    return out
