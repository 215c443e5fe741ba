"""Optional compilation of the request path (everything else is in pyproject.toml).

``AIGATEWAY_MYPYC=1 pip install .`` (or ``pip wheel .``) compiles the modules in
``COMPILED`` with mypyc into C extensions: the same code, typed as mypy --strict
checks it, with about a third less CPU per request in the gateway's own code
(docs/benchmarks.md). Without the variable the package is pure Python. CI runs
the whole test suite against both builds; the Docker image ships the compiled one.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import setup

#: modules on the path of every request (and of limits, guardrails and caches);
#: never pydantic models, runtime-checkable protocols or classes subclassed by
#: modules left interpreted (mypyc cannot compile those)
COMPILED = (
    "accesslog",
    "bpe",
    "jsonc",
    "keys",
    "guard",
    "guard_stream",
    "http1",
    "ledger",
    "limits",
    "metrics",
    "octets",
    "pipeline",
    "policy",
    "pricing",
    "price_table",
    "proxy",
    "quota",
    "redact",
    "respond",
    "retries",
    "routing",
    "scrub",
    "sse",
    "state_memory",
    "tokens",
    "upstream",
    "usage",
    "middleware/account",
    "middleware/auth",
    "middleware/cache",
    "middleware/govern",
    "middleware/guard",
    "middleware/observe",
    "middleware/parse",
    "middleware/record",
    "middleware/route",
    "providers/azure",
    "providers/base",
    "providers/openai",
)


def ext_modules() -> list[Any]:
    if os.environ.get("AIGATEWAY_MYPYC") != "1" or os.environ.get("AIGATEWAY_NO_EXTENSIONS"):
        return []  # pure Python; or (build_support/backend.py) not building a wheel
    from mypyc.build import mypycify

    paths = [f"src/aigateway/{name}.py" for name in COMPILED]
    config = ["--config-file", "build_support/mypyc.ini"]
    return mypycify([*config, *paths], opt_level="3", group_name="aigateway")


setup(ext_modules=ext_modules())
