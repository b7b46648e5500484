"""Fixtures for the compose tests: the stack `scripts/test-compose` prepared and built.

Without it (a plain `./scripts/test`), the tests that need the running stack are skipped;
the checks of compose.yaml itself still run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose.harness import ComposeStack
from tests.e2e.harness import telephony_overrides
from tests.standins.gemini_live import GeminiLiveStandin


@pytest.fixture(scope="session")
def compose_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[ComposeStack]:
    """The whole appliance from compose.yaml with its `telephony` and `monitoring` profiles, healthy, with the
    Gemini Live stand-in as model and livekit-sip on loopback (harness.telephony_overrides).

    Sets SSL_CERT_FILE for the session to a bundle that trusts Caddy's internal CA, so the
    caller reaches the front door over verified HTTPS and WSS; `down -v` at the end.
    """
    stack = ComposeStack.from_environment(artifacts / "compose", profiles=("telephony", "monitoring"))
    if stack is None:
        pytest.skip("needs the stack prepared by scripts/test-compose (a Docker engine, built images)")
    standin: GeminiLiveStandin = request.getfixturevalue("standin")
    stack.configure(standin.base_url, standin.ca_file, telephony_overrides())
    previous = os.environ.get("SSL_CERT_FILE")
    try:
        stack.up()
        os.environ["SSL_CERT_FILE"] = str(stack.trust_front_door(tmp_path_factory.mktemp("front-door")))
        yield stack
    finally:
        if previous is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = previous
        stack.down()
        stack.write_timings()
