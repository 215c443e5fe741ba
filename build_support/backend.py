"""The build backend: setuptools, plus what a compiled build needs.

``AIGATEWAY_MYPYC=1`` compiles the request path with mypyc (see ``setup.py``).
mypyc type-checks what it compiles, so that build also needs mypy, the stubs
and the project's own dependencies in the (isolated) build environment.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 (the rest of the PEP 517 hooks)


def _compiled() -> list[str]:
    if os.environ.get("AIGATEWAY_MYPYC") != "1":
        return []
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
    return ["mypy>=1.10", "types-PyYAML", *project["dependencies"]]


def _requires(hook: Any, config_settings: dict[str, Any] | None) -> list[str]:
    # setuptools runs setup.py to find these; mypyc is not installed yet
    os.environ["AIGATEWAY_REQUIREMENTS_ONLY"] = "1"
    try:
        return [*hook(config_settings), *_compiled()]
    finally:
        del os.environ["AIGATEWAY_REQUIREMENTS_ONLY"]


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires(_setuptools.get_requires_for_build_wheel, config_settings)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires(_setuptools.get_requires_for_build_editable, config_settings)
