"""Build-time check of a service image's Python environment (docker/services.Dockerfile).

`python check-venv.py requirements.lock /app/<package>` fails the build when:
  - an installed distribution is not pinned in the lock at that version (the image must be
    built from the lock, nothing newer or extra), or
  - a module of the package imports a third-party module that is not installed (a
    dependency missing from the service's pyproject.toml shows here, not at run time).
Imports under `if TYPE_CHECKING:` or in a `try:` that handles ImportError are optional.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            pins[normalize(match.group(1))] = match.group(3)
    return pins


def unpinned(lock: Path) -> list[str]:
    pins = lock_pins(lock)
    problems = []
    for dist in importlib.metadata.distributions():
        name, version = normalize(dist.metadata["Name"]), dist.version
        if pins.get(name) != version:
            problems.append(f"{name}=={version} (lock: {pins.get(name, 'not pinned')})")
    return sorted(problems)


class _Imports(ast.NodeVisitor):
    """Top-level module names a file needs (not the optional ones)."""

    def __init__(self) -> None:
        self.required: set[str] = set()
        self._optional = 0

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        is_type_checking = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        if is_type_checking:
            self._optional += 1
            for child in node.body:
                self.visit(child)
            self._optional -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        names = set()
        for handler in node.handlers:
            types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            names |= {t.id for t in types if isinstance(t, ast.Name)}
        optional = bool(names & {"ImportError", "ModuleNotFoundError", "Exception"})
        self._optional += optional
        for child in node.body:
            self.visit(child)
        self._optional -= optional
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        if not self._optional:
            self.required |= {alias.name.split(".")[0] for alias in node.names}

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if not self._optional and node.level == 0 and node.module:
            self.required.add(node.module.split(".")[0])


def missing_imports(package_dir: Path) -> list[str]:
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        for name in sorted(visitor.required - set(sys.stdlib_module_names) - {package_dir.name, "__future__"}):
            if importlib.util.find_spec(name) is None:
                problems.append(f"{path.relative_to(package_dir.parent)} imports {name}")
    return problems


def main(argv: list[str]) -> int:
    lock, package_dir = Path(argv[0]), Path(argv[1])
    sys.path.insert(0, str(package_dir.parent))
    failed = False
    for problem in unpinned(lock):
        print(f"check-venv: installed but not pinned in {lock.name}: {problem}", file=sys.stderr)
        failed = True
    for problem in missing_imports(package_dir):
        print(f"check-venv: {problem}, which is not installed: add it to the service's "
              f"pyproject.toml and to requirements.in (then requirements.lock)", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
