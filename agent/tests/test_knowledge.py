"""The knowledge folder: documents read into passages, the index, its search and the tool's answer."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.corpus import FACTS, HOURS, INSTALL, RETURNS, WARRANTY, write_corpus
from voice_agent.documents import pack_blocks, read_passages
from voice_agent.knowledge import KnowledgeBase, ensure_index, format_hits, match_expression
from voice_agent.knowledge_tool import SOURCES_PREFIX, ReplySources


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "docs")


@pytest.fixture
def index(corpus: Path, tmp_path: Path) -> Path:
    path = tmp_path / "state" / "knowledge.sqlite"
    report = ensure_index(corpus, path)
    assert report.rebuilt and report.files == 4
    return path


def test_each_format_is_split_into_passages_with_its_location(corpus: Path) -> None:
    pdf = read_passages(corpus / "returns-policy.pdf", "returns-policy.pdf")
    assert [p.citation for p in pdf] == ["returns-policy.pdf, page 1", "returns-policy.pdf, page 2"]
    assert "45 days" in pdf[1].text

    markdown = {p.citation: p.text for p in read_passages(corpus / "warranty.md", "warranty.md")}
    assert "seven-year parts warranty" in markdown["warranty.md › Warranty › Heat pumps"]
    assert "two-year warranty" in markdown["warranty.md › Warranty › Thermostats"]

    html = {p.citation: p.text for p in read_passages(corpus / "support.html", "support.html")}
    assert "weekdays from 8:00 to 18:00" in html["support.html › Support › Opening hours"]
    assert not any("tracking" in text or "font-family" in text for text in html.values()), "script or style indexed"

    [text] = read_passages(corpus / "notes.txt", "notes.txt")
    assert text.citation == "notes.txt" and "two weeks ahead" in text.text


def test_the_index_holds_the_documents_and_skips_what_it_cannot_read(corpus: Path, tmp_path: Path) -> None:
    report = ensure_index(corpus, tmp_path / "index.sqlite")
    assert report.files == 4  # not the hidden draft, not the PNG
    assert [source for source, _reason in report.skipped] == ["broken.pdf"]
    knowledge = KnowledgeBase.open(tmp_path / "index.sqlite")
    assert knowledge is not None
    hits = knowledge.search("HP-300 launches in March", 10)  # in .drafts/: never indexed
    assert hits and not any("launches" in hit.passage.text for hit in hits)
    knowledge.close()


@pytest.mark.parametrize("fact", FACTS, ids=lambda f: f.citation)
def test_a_question_finds_the_passage_that_answers_it(index: Path, fact: object) -> None:
    knowledge = KnowledgeBase.open(index)
    assert knowledge is not None
    best = knowledge.search(fact.question, 3)[0].passage  # type: ignore[attr-defined]
    assert best.citation == fact.citation  # type: ignore[attr-defined]
    assert fact.answer in best.text  # type: ignore[attr-defined]
    knowledge.close()


def test_an_unchanged_folder_is_not_indexed_again_and_a_changed_one_is(corpus: Path, index: Path) -> None:
    assert not ensure_index(corpus, index).rebuilt
    warranty = corpus / "warranty.md"
    warranty.write_text(warranty.read_text().replace("seven-year", "ten-year"))
    os.utime(warranty, ns=(warranty.stat().st_atime_ns, warranty.stat().st_mtime_ns + 1_000_000))
    report = ensure_index(corpus, index)
    assert report.rebuilt
    knowledge = KnowledgeBase.open(index)
    assert knowledge is not None
    assert "ten-year" in knowledge.search(WARRANTY.question, 1)[0].passage.text
    (corpus / "notes.txt").unlink()
    assert ensure_index(corpus, index).rebuilt
    assert KnowledgeBase.open(index).search(INSTALL.question, 3)[0].passage.source != "notes.txt"  # type: ignore[union-attr]


def test_a_call_that_opened_the_index_keeps_reading_it_while_it_is_rebuilt(corpus: Path, index: Path) -> None:
    before = KnowledgeBase.open(index)
    assert before is not None
    (corpus / "support.html").unlink()
    ensure_index(corpus, index)
    assert before.search(HOURS.question, 1)[0].passage.citation == HOURS.citation  # the old file, still whole
    after = KnowledgeBase.open(index)
    assert after is not None and after.passages < before.passages


def test_an_empty_or_missing_folder_offers_no_knowledge(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    report = ensure_index(tmp_path / "empty", tmp_path / "index.sqlite")
    assert report.rebuilt and report.passages == 0
    assert KnowledgeBase.open(tmp_path / "index.sqlite") is None
    assert KnowledgeBase.open(tmp_path / "never-built.sqlite") is None
    with pytest.raises(FileNotFoundError):
        ensure_index(tmp_path / "missing", tmp_path / "index.sqlite")


def test_query_syntax_in_the_question_is_searched_as_words(index: Path) -> None:
    knowledge = KnowledgeBase.open(index)
    assert knowledge is not None
    assert match_expression('refund" OR NEAR(a b) * col:x') == '"refund" OR "or" OR "near" OR "a" OR "b" OR "col" OR "x"'
    assert knowledge.search('"45 days" AND return* NOT (refund)', 1)[0].passage.citation == RETURNS.citation
    assert knowledge.search("?!", 3) == []
    assert match_expression("the warranty", frozenset({"the"})) == '"warranty"'
    assert match_expression("the", frozenset({"the"})) == '"the"'  # nothing else left: keep it


def test_the_answer_to_the_model_cites_each_passage(index: Path) -> None:
    knowledge = KnowledgeBase.open(index)
    assert knowledge is not None
    answer = format_hits(knowledge.search(RETURNS.question, 2))
    assert f"[1] {RETURNS.citation}\n" in answer and "45 days" in answer
    assert "say which document" in answer
    assert "No passage" in format_hits([])


def test_passages_keep_blocks_whole_and_cut_long_ones() -> None:
    assert pack_blocks(["a b", "c d", "e"], 4) == ["a b\n\nc d", "e"]
    assert pack_blocks(["one two three four five"], 2) == ["one two", "three four", "five"]
    assert pack_blocks(["", "  "], 5) == []


async def test_a_reply_after_a_search_shows_its_sources_in_the_transcript_and_the_record() -> None:
    from livekit.agents import llm

    told: list[str] = []
    recorded: list[dict[str, object]] = []

    async def tell(text: str) -> None:
        told.append(text)

    sources = ReplySources(tell=tell, record=recorded.append)
    sources.reply_added(llm.ChatMessage(role="assistant", content=["Hello!"]))  # greeting: no search yet
    sources.found([RETURNS.citation, WARRANTY.citation])
    sources.found([RETURNS.citation])
    sources.reply_added(llm.ChatMessage(role="user", content=["(speech)"]))
    sources.reply_added(llm.ChatMessage(role="assistant", content=["Within 45 days, says the returns policy."]))
    sources.reply_added(llm.ChatMessage(role="assistant", content=["Anything else?"]))
    await asyncio.sleep(0)
    assert told == [f"{SOURCES_PREFIX}{RETURNS.citation}; {WARRANTY.citation}"]
    assert recorded == [{"sources": [RETURNS.citation, WARRANTY.citation]}]


def test_documents_in_subfolders_are_cited_by_their_path(corpus: Path, tmp_path: Path) -> None:
    (corpus / "policies").mkdir()
    shutil.move(corpus / "notes.txt", corpus / "policies" / "notes.txt")
    ensure_index(corpus, tmp_path / "index.sqlite")
    knowledge = KnowledgeBase.open(tmp_path / "index.sqlite")
    assert knowledge is not None
    assert knowledge.search(INSTALL.question, 1)[0].passage.citation == "policies/notes.txt"
