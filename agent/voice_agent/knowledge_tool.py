"""`search_knowledge`, the tool that answers from the operator's documents, and its sources.

The model calls `search_knowledge(query)`; the tool returns the best passages of the
knowledge index (`knowledge.py`), each headed by its citation (file and heading, or file
and page). The instructions (`KNOWLEDGE_INSTRUCTIONS`) tell the model to answer from them
and say where from. `ReplySources` then shows which sources the reply used: a
"Sources: ..." line in the caller's transcript after the reply, and a `sources` event in
the call record right after the reply's turn (the records API attaches it to that turn).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from livekit.agents import llm

from .knowledge import KnowledgeBase, format_hits
from .tool_guard import ToolGuard

logger = logging.getLogger("voice_agent.knowledge")

TOOL_NAME = "search_knowledge"
#: Added to the agent's instructions when the tool is offered.
KNOWLEDGE_INSTRUCTIONS = (
    "For questions about the products, services, policies or procedures you represent, call "
    f"{TOOL_NAME} first and answer only from the passages it returns, naming the document the "
    "answer comes from. If it finds nothing relevant, say you don't know rather than guessing."
)
#: A search slower than this is abandoned (it takes milliseconds: see scripts/bench-knowledge), seconds.
SEARCH_TIMEOUT_S = 2.0
#: Prefix of the transcript line that lists a reply's sources.
SOURCES_PREFIX = "Sources: "


class ReplySources:
    """Remembers the citations a search returned and shows them with the next reply.

    Args:
        tell: writes a line in the caller's transcript.
        record: optional sink for the call record; gets `{"sources": [citation, ...]}`.
    """

    def __init__(
        self,
        *,
        tell: Callable[[str], Awaitable[None]],
        record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._tell = tell
        self._record = record or (lambda _data: None)
        self._pending: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def found(self, citations: list[str]) -> None:
        """A search returned passages from these sources (in rank order)."""
        self._pending = list(dict.fromkeys([*self._pending, *citations]))

    def reply_added(self, item: Any) -> None:
        """A conversation item was added; an assistant reply after a search gets its sources."""
        if not (isinstance(item, llm.ChatMessage) and item.role == "assistant" and item.text_content):
            return
        if not self._pending:
            return
        sources, self._pending = self._pending, []
        self._record({"sources": sources})
        task = asyncio.ensure_future(self._tell(SOURCES_PREFIX + "; ".join(sources)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def attach(self, session: Any) -> None:
        """Follow an AgentSession's conversation (its `conversation_item_added` events)."""
        session.on("conversation_item_added", lambda event: self.reply_added(event.item))


def search_tool(knowledge: KnowledgeBase, guard: ToolGuard, sources: ReplySources, *, results: int) -> llm.Tool:
    """The `search_knowledge` tool over `knowledge`, returning `results` passages per search."""

    async def search_knowledge(query: str) -> str:
        """Search the organisation's own documents (manuals, policies, price lists, procedures) for
        the passages that answer a question. Use it before answering any question about them.

        Args:
            query: The question, or its key words, as the documents would phrase it (for example
                "return period refund" rather than "can I send it back").
        """
        hits = await guard.run(
            TOOL_NAME, lambda: asyncio.to_thread(knowledge.search, query, results), timeout_s=SEARCH_TIMEOUT_S
        )
        logger.info("%s(%r): %d passage(s)", TOOL_NAME, query[:80], len(hits))
        sources.found([hit.passage.citation for hit in hits])
        return format_hits(hits)

    return llm.function_tool(search_knowledge, name=TOOL_NAME)
