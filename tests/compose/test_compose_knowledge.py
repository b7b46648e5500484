"""The knowledge folder under compose: mounted read-only into the agent, indexed inside its image.

Run by `scripts/test-compose` with the rest of tests/compose. The operator's commands are
the ones the README gives: drop documents into the host folder, then
`docker compose exec agent python -m voice_agent.knowledge index`.
"""

from __future__ import annotations

import pytest
import yaml

from scripts.stack import ROOT
from tests.compose.harness import ComposeStack
from tests.corpus import RETURNS, write_corpus



def test_the_agent_mounts_the_knowledge_folder_read_only() -> None:
    """Checked without a Docker engine (every ./scripts/test)."""
    agent = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))["services"]["agent"]
    assert "${KNOWLEDGE_DIR:-./knowledge}:/knowledge:ro" in agent["volumes"]
    assert agent["environment"]["KNOWLEDGE_DIR"] == "/knowledge"


@pytest.mark.e2e
@pytest.mark.compose
@pytest.mark.timeout(900)
def test_documents_on_the_host_are_indexed_and_searched_in_the_agent(compose_stack: ComposeStack) -> None:
    write_corpus(compose_stack.dir / "knowledge")  # the default KNOWLEDGE_DIR, ./knowledge

    index = compose_stack.run("exec", "-T", "agent", "python", "-m", "voice_agent.knowledge", "index",
                              check=False, timeout=300)
    assert index.returncode == 0, index.stderr
    assert "indexed 10 passages from 4 files" in index.stdout
    assert "skipped broken.pdf" in index.stderr

    search = compose_stack.run("exec", "-T", "agent", "python", "-m", "voice_agent.knowledge", "search",
                               RETURNS.question, check=False, timeout=120)
    assert search.returncode == 0, search.stderr
    assert f"[1] {RETURNS.citation}\n" in search.stdout and RETURNS.answer in search.stdout

    # The folder is the operator's: the agent cannot write to it.
    touch = compose_stack.run("exec", "-T", "agent", "touch", "/knowledge/x", check=False, timeout=60)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr
