"""The knowledge folder's documents, read into passages a search can return.

Formats (by file suffix; anything else in the folder is ignored):

* Markdown (``.md``, ``.markdown``): parsed with markdown-it-py; each heading starts a
  section, and a passage's location is its heading path (``Returns › Refunds``).
* HTML (``.html``, ``.htm``): converted to Markdown with markdownify (scripts and styles
  dropped), then read as Markdown, so its ``<h1>``-``<h6>`` give the locations.
* Plain text (``.txt``, ``.text``): blocks separated by blank lines; no location.
* PDF (``.pdf``): text extracted page by page with pypdf; the location is ``page N``.

A section's top-level blocks (paragraphs, lists, tables, code) are packed into passages
of at most ``MAX_PASSAGE_WORDS`` words; a longer block is cut at that many words. Hidden
files and folders (a leading ``.``) are skipped, and so are files over ``MAX_FILE_BYTES``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("voice_agent.knowledge")

#: File suffixes read, and the reader of each.
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
TEXT_SUFFIXES = frozenset({".txt", ".text"})
PDF_SUFFIXES = frozenset({".pdf"})
SUFFIXES = MARKDOWN_SUFFIXES | HTML_SUFFIXES | TEXT_SUFFIXES | PDF_SUFFIXES

#: Longest passage, in words (about 40 s of speech; a search returns a few of them).
MAX_PASSAGE_WORDS = 120
#: Larger files are skipped with a warning, bytes.
MAX_FILE_BYTES = 50 * 1024 * 1024
#: Separates the headings of a location.
HEADING_SEPARATOR = " › "


@dataclass(frozen=True)
class Passage:
    """A piece of a document that a search returns whole.

    Attributes:
        source: the file, relative to the knowledge folder, with ``/`` separators.
        location: where in the file: a heading path (``Returns › Refunds``), ``page 3``
            for a PDF, or ``""`` (the whole file, or text before its first heading).
        text: the passage's text (Markdown for Markdown and HTML files).
    """

    source: str
    location: str
    text: str

    @property
    def citation(self) -> str:
        """Where the passage comes from, as people say it: ``returns.md › Refunds``."""
        if not self.location:
            return self.source
        if self.location.startswith("page "):
            return f"{self.source}, {self.location}"
        return f"{self.source}{HEADING_SEPARATOR}{self.location}"


class UnreadableDocument(Exception):
    """A file in the knowledge folder could not be read; the message says why, in one line."""


def document_files(folder: Path) -> list[Path]:
    """The readable documents under `folder` (recursively), sorted by relative path.

    Hidden files and folders are left out. Raises OSError when `folder` cannot be listed.
    """
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in SUFFIXES and path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def read_passages(path: Path, source: str) -> list[Passage]:
    """Split one document into passages.

    Args:
        path: the file.
        source: its name in citations (the path relative to the knowledge folder).

    Raises:
        UnreadableDocument: the file is too large, unreadable or not a valid document.
    """
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise UnreadableDocument(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        suffix = path.suffix.lower()
        if suffix in PDF_SUFFIXES:
            sections = list(_pdf_sections(path))
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
            if suffix in HTML_SUFFIXES:
                sections = list(_markdown_sections(_html_to_markdown(text)))
            elif suffix in MARKDOWN_SUFFIXES:
                sections = list(_markdown_sections(text))
            else:
                sections = [("", _text_blocks(text))]
    except UnreadableDocument:
        raise
    except Exception as exc:  # pypdf and the parsers raise many types for a broken file
        raise UnreadableDocument(f"{type(exc).__name__}: {exc}"[:200]) from exc
    return [
        Passage(source, location, text)
        for location, blocks in sections
        for text in pack_blocks(blocks, MAX_PASSAGE_WORDS)
    ]


def pack_blocks(blocks: list[str], max_words: int) -> list[str]:
    """Join consecutive blocks into passages of at most `max_words` words.

    Blocks stay whole when they fit; a block longer than `max_words` is cut into pieces
    of `max_words` words. Empty blocks are dropped.
    """
    passages: list[str] = []
    current: list[str] = []
    count = 0
    for block in blocks:
        words = block.split()
        if not words:
            continue
        if len(words) > max_words:
            if current:
                passages.append("\n\n".join(current))
                current, count = [], 0
            passages.extend(" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words))
            continue
        if count + len(words) > max_words and current:
            passages.append("\n\n".join(current))
            current, count = [], 0
        current.append(block.strip())
        count += len(words)
    if current:
        passages.append("\n\n".join(current))
    return passages


def load_readers() -> None:
    """Import the parsers (markdown-it-py, markdownify, pypdf) now rather than at the first
    document: they are imported lazily so that a job, which only searches, never loads them."""
    import markdown_it  # noqa: F401
    import markdownify  # noqa: F401
    import pypdf  # noqa: F401


def _markdown_sections(text: str) -> Iterator[tuple[str, list[str]]]:
    """(heading path, top-level blocks) for each section of a Markdown text."""
    from markdown_it import MarkdownIt

    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    headings: list[tuple[int, str]] = []  # the open headings: (level, text)
    blocks: list[str] = []
    location = ""
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.level != 0 or token.map is None:
            index += 1
            continue
        if token.type == "heading_open":
            if blocks:
                yield location, blocks
            level = int(token.tag[1])
            title = tokens[index + 1].content.strip()
            headings = [h for h in headings if h[0] < level] + [(level, title)]
            location = HEADING_SEPARATOR.join(h[1] for h in headings if h[1])
            blocks = []
            index += 3  # heading_open, inline, heading_close
            continue
        start, end = token.map
        blocks.append("\n".join(lines[start:end]))
        index = _after_block(tokens, index)
    if blocks:
        yield location, blocks


def _after_block(tokens: list, index: int) -> int:
    """The index of the token after the top-level block that starts at `index`."""
    token = tokens[index]
    if token.nesting != 1:
        return index + 1
    depth = 0
    for position in range(index, len(tokens)):
        depth += tokens[position].nesting
        if depth == 0:
            return position + 1
    return len(tokens)


def _html_to_markdown(html: str) -> str:
    """HTML as Markdown with ATX headings (``# Title``); scripts and styles dropped."""
    from markdownify import ATX, markdownify

    return markdownify(html, heading_style=ATX, strip=["img"])


def _text_blocks(text: str) -> list[str]:
    """Blocks of a plain text: runs of lines separated by blank lines."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line.rstrip())
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def _pdf_sections(path: Path) -> Iterator[tuple[str, list[str]]]:
    """("page N", blocks of that page's text) for each page with text."""
    from pypdf import PdfReader

    reader = PdfReader(path)
    if reader.is_encrypted:
        raise UnreadableDocument("the PDF is encrypted")
    for number, page in enumerate(reader.pages, start=1):
        blocks = _text_blocks(page.extract_text() or "")
        if blocks:
            yield f"page {number}", blocks
