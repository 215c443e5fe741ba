"""The build backend: setuptools, plus what a compiled build needs.

``AIGATEWAY_MYPYC=1`` compiles the request path with mypyc when a wheel is built
(see ``setup.py``). mypyc type-checks what it compiles, so that build also needs
mypy, the stubs and the project's own dependencies in the (isolated) build
environment. An sdist is always the plain source.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 (the rest of the PEP 517 hooks)

#: set while setuptools runs setup.py for something other than compiling a wheel
#: (listing requirements before mypyc is installed, writing an sdist)
NO_EXTENSIONS = "AIGATEWAY_NO_EXTENSIONS"


def _without_extensions(hook: Callable[..., Any], *args: Any) -> Any:
    os.environ[NO_EXTENSIONS] = "1"
    try:
        return hook(*args)
    finally:
        del os.environ[NO_EXTENSIONS]


def _compiled() -> list[str]:
    if os.environ.get("AIGATEWAY_MYPYC") != "1":
        return []
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
    return ["mypy>=1.10", "types-PyYAML", *project["dependencies"]]


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    hook = _setuptools.get_requires_for_build_wheel
    return [*_without_extensions(hook, config_settings), *_compiled()]


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    hook = _setuptools.get_requires_for_build_editable
    return [*_without_extensions(hook, config_settings), *_compiled()]


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    hook = _setuptools.get_requires_for_build_sdist
    return list(_without_extensions(hook, config_settings))


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    return str(_without_extensions(_setuptools.build_sdist, sdist_directory, config_settings))
