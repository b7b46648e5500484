"""The web client's own unit tests (`node --test web/test/`), run with the rest of the suite."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from scripts import stack


def test_web_client_unit_tests_pass() -> None:
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: run the tests with ./scripts/test")
    done = subprocess.run(["node", "--test", "test/"], cwd=stack.ROOT / "web", capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
