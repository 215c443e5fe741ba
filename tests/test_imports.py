"""Imports point down the layers of DESIGN.md, and every module imports alone."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "src" / "aigateway"

# Layer of each module (dotted name below aigateway); a package's modules share a layer
# unless listed on their own.
LAYERS: dict[str, int] = {
    "__init__": 0,
    "errors": 0,
    "wire": 0,
    "usage": 0,
    "jsonc": 0,
    "octets": 0,
    "bpe": 0,
    "memory": 0,
    "config": 0,
    "config.model": 0,
    "config.load": 1,
    "config.support": 1,
    "config.diff": 1,
    "config.watch": 3,
    "sse": 1,
    "scrub": 1,
    "keys": 1,
    "routing": 1,
    "retries": 1,
    "estimate": 1,
    "pricing": 1,
    "price_table": 1,
    "price_export": 1,
    "tokens": 1,
    "limits": 1,
    "quota": 2,
    "policy": 2,
    "state_memory": 3,
    "state_redis": 3,
    "state_fallback": 3,
    "redact": 1,
    "guard": 1,
    "guard_stream": 1,
    "ledger": 1,
    "promptlog": 3,
    "logread": 3,
    "rebuild": 3,
    "cache_store": 3,
    "semantic_store": 3,
    "providers": 1,
    "pipeline": 2,
    "accesslog": 1,
    "observability": 2,
    "metrics": 2,
    "middleware": 3,
    "upstream": 3,
    "http1": 3,
    "mock_transport": 3,
    "proxy": 3,
    "runtime": 4,
    "reload": 4,
    "tasks": 2,
    "app": 5,
    "admin": 5,
    "web_common": 5,
    "respond": 5,
    "serve": 5,
    "cli": 6,
    "cli_log": 6,
    "__main__": 6,
}


def modules() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def layer(name: str) -> int:
    probe = name
    while probe:
        if probe in LAYERS:
            return LAYERS[probe]
        probe = probe.rpartition(".")[0]
    raise AssertionError(f"aigateway.{name} has no layer in tests/test_imports.py")


def internal_imports(name: str) -> set[str]:
    path = PKG / (name.replace(".", "/") + ".py")
    if not path.exists():
        path = PKG / name.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "aigateway":
                found |= {a.name for a in node.names}
            elif node.module.startswith("aigateway."):
                found.add(node.module.removeprefix("aigateway."))
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("aigateway.")
                for a in node.names
                if a.name.startswith("aigateway.")
            }
    return found


@pytest.mark.parametrize("name", modules())
def test_imports_point_down(name: str) -> None:
    mine = layer(name)
    for dep in internal_imports(name):
        if dep == "__version__":
            dep = "__init__"
        assert layer(dep) <= mine, (
            f"aigateway.{name} (L{mine}) imports aigateway.{dep} (L{layer(dep)})"
        )


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer(name)


@pytest.mark.parametrize("name", [m for m in modules() if m != "__main__"])
def test_module_imports_alone(name: str) -> None:
    module = "aigateway" if name == "__init__" else f"aigateway.{name}"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_providers_do_no_io() -> None:
    """Adapters are pure: no aiohttp, sockets or asyncio in aigateway.providers."""
    for path in (PKG / "providers").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not names & {"aiohttp", "asyncio", "socket", "time"}, path.name


def compiled() -> list[str]:
    """The modules setup.py compiles with mypyc (AIGATEWAY_MYPYC=1)."""
    tree = ast.parse((PKG.parent.parent / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            return [str(ast.literal_eval(e)).replace("/", ".") for e in node.value.elts]  # type: ignore[attr-defined]
    raise AssertionError("setup.py has no COMPILED")


def test_what_mypyc_compiles_it_can_compile() -> None:
    """mypyc cannot compile a runtime-checkable protocol, and a class it compiled
    cannot be subclassed by a module left interpreted."""
    names = compiled()
    assert set(names) <= set(modules())
    classes: dict[str, set[str]] = {}
    for name in names:
        tree = ast.parse((PKG / (name.replace(".", "/") + ".py")).read_text())
        assert "runtime_checkable" not in ast.unparse(tree), name
        classes[name] = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    for name in set(modules()) - set(names):
        path = PKG / (name.replace(".", "/") + ".py")
        tree = ast.parse(
            (path if path.exists() else path.with_suffix("") / "__init__.py").read_text()
        )
        imported = {
            a.asname or a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom)
            and (n.module or "").removeprefix("aigateway.") in classes
            for a in n.names
            if a.name in classes[(n.module or "").removeprefix("aigateway.")]
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert not bases & imported, (
                    f"aigateway.{name}.{node.name} subclasses a compiled class"
                )


def test_compiled_modules_avoid_what_mypyc_leaves_slow() -> None:
    """mypyc compiles a plain zip() to a loop but zip(..., strict=...) to a generic
    call with a keyword dict (~0.4 µs each). And ``b"x" in data`` (any bytes
    needle) first tries the needle as an integer inside CPython, raising and
    clearing a TypeError: ~25x a memchr (``octets.LF in data``, ``data.find(...)``)."""
    for name in compiled():
        tree = ast.parse((PKG / (name.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "zip":
                assert not node.keywords, f"aigateway.{name}:{node.lineno}: zip(strict=...)"
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant):
                membership = any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
                bytes_needle = isinstance(node.left.value, bytes)
                assert not (membership and bytes_needle), (
                    f"aigateway.{name}:{node.lineno}: a bytes needle with 'in'"
                )


def test_the_build_under_test_is_the_one_meant() -> None:
    """Pure Python, or (CI's second run: AIGATEWAY_MYPYC=1 build, with
    AIGATEWAY_EXPECT_COMPILED=1) the C extensions, never some of each."""
    suffix = ".so" if os.environ.get("AIGATEWAY_EXPECT_COMPILED") == "1" else ".py"
    for name in compiled():
        path = importlib.import_module(f"aigateway.{name}").__file__ or ""
        assert path.endswith(suffix), f"aigateway.{name} is {path}, not a {suffix} file"
