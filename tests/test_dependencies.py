"""Each service's pyproject.toml lists every distribution its package imports.

The images install a service from its pyproject.toml at the lock's versions
(docker/services.Dockerfile), so an import served only by another package's dependency
would break when that package changes its own. Imports under ``if TYPE_CHECKING:`` count
too: they are cheap to list.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: (service folder, its package); the shared `calls/voice_calls` may import nothing outside stdlib.
SERVICES = [("token-server", "token_server"), ("agent", "voice_agent"), ("calls", "voice_calls")]
LOCAL = {package for _, package in SERVICES}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules(package: Path) -> set[str]:
    """Absolute imports of the package's modules, as dotted names up to two parts."""
    found = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return {".".join(name.split(".")[:2]) for name in found}


@cache
def _owners() -> dict[str, str]:
    """An installed module's file (``google/protobuf/__init__.py``, ``jwt/__init__.py``, ``six.py``)
    -> the distribution that installed it; read from the distributions' records, no import."""
    owners = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            if file.suffix == ".py":
                owners[file.as_posix()] = _normalize(dist.metadata["Name"])
    return owners


def _distribution(module: str) -> str | None:
    """The installed distribution that provides `module`, or None (stdlib, local, missing)."""
    parts = module.split(".")
    if parts[0] in sys.stdlib_module_names or parts[0] in LOCAL:
        return None
    owners = _owners()
    for depth in range(len(parts), 0, -1):  # google.protobuf before google (a namespace)
        path = "/".join(parts[:depth])
        for candidate in (f"{path}/__init__.py", f"{path}.py"):
            if candidate in owners:
                return owners[candidate]
    return None


def _declared(service: str) -> set[str]:
    project = tomllib.loads((ROOT / service / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {_normalize(re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}


@pytest.mark.parametrize(("service", "package"), SERVICES)
def test_pyproject_lists_what_the_package_imports(service: str, package: str) -> None:
    needed = {dist for module in _imported_modules(ROOT / service / package)
              if (dist := _distribution(module)) is not None}
    missing = needed - _declared(service)
    assert not missing, f"{service}/pyproject.toml does not list {sorted(missing)}, which {package} imports"
