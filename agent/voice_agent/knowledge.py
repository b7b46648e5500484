"""Answers from the operator's own documents: the knowledge index and its search.

The documents in `KNOWLEDGE_DIR` (see `documents.py` for the formats) are split into
passages and indexed in a SQLite FTS5 table (Python's own sqlite3; BM25 ranking, Porter
stemming). The index is one SQLite file at `KNOWLEDGE_INDEX_PATH`:

    passages      FTS5   title (file name words and heading path; weighted x2), text,
                         source, location (unindexed: where the passage comes from)
    common_words  TABLE  word: words in more than half of the passages. FTS5's BM25 gives
                         them no weight (its IDF is clamped to 1e-6 there), so a search
                         leaves them out: same ranking, far fewer rows to score
    meta          TABLE  key, value: fingerprint (the folder's files, sizes and modification
                         times, and this module's schema), passages, files, built_at (Unix s)

`ensure_index` rebuilds it when the folder's fingerprint changed (the worker does that at
start; `./scripts/knowledge index` does it on demand). A build writes a new file and
renames it over the old one, so a call never reads half an index; calls started after
the rename read the new one.

Why BM25 and not embeddings: measured by `scripts/bench-knowledge` (figures in the README,
"Make it yours"). Only the passages a search returns leave the machine, to the model.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from .documents import Passage, UnreadableDocument, document_files, read_passages

#: Bump when the table layout or the passage splitting changes: indexes are rebuilt.
SCHEMA_VERSION = "1"
#: FTS5 tokenizer: Porter stemming over Unicode words, accents folded.
TOKENIZER = "porter unicode61 remove_diacritics 2"
#: BM25 column weights: (title, text).
TITLE_WEIGHT, TEXT_WEIGHT = 2.0, 1.0
#: The longest query used, in words (a model sometimes passes a whole paragraph).
MAX_QUERY_TERMS = 32

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Hit:
    """A passage a search found, with its BM25 score (lower is better, as FTS5 ranks)."""

    passage: Passage
    score: float


@dataclass
class IndexReport:
    """What `ensure_index` did.

    Attributes:
        rebuilt: False when the index was up to date (nothing was read).
        files / passages: documents indexed and passages in the index.
        skipped: `(file, reason)` for each document that could not be read.
        seconds: how long the build took.
    """

    rebuilt: bool
    files: int = 0
    passages: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def fingerprint(folder: Path) -> str:
    """A hash of what an index of `folder` depends on: the resolved folder path, each
    document's relative path, size and modification time (ns), and `SCHEMA_VERSION`.

    Raises:
        OSError: the folder cannot be listed.
    """
    digest = hashlib.sha256(f"{SCHEMA_VERSION}\0{folder.resolve()}\0".encode())
    for path in document_files(folder):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def indexed_fingerprint(index_path: Path) -> str | None:
    """The fingerprint an existing index was built from, or None (no index, or unreadable)."""
    try:
        with closing(_connect_read_only(index_path)) as connection:
            row = connection.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def ensure_index(folder: Path, index_path: Path, *, force: bool = False) -> IndexReport:
    """Build the index of `folder` at `index_path` unless it is up to date.

    Args:
        force: rebuild even when the fingerprint matches.

    Raises:
        FileNotFoundError / NotADirectoryError: `folder` is missing or not a folder.
        OSError: the folder cannot be read or the index cannot be written.
    """
    if not folder.is_dir():
        if folder.exists():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(folder))
    current = fingerprint(folder)
    if not force and indexed_fingerprint(index_path) == current:
        return IndexReport(rebuilt=False, passages=_stored_count(index_path))
    return build_index(folder, index_path, current)


def build_index(folder: Path, index_path: Path, fingerprint_: str | None = None) -> IndexReport:
    """Read every document under `folder` and write a fresh index to `index_path`.

    Unreadable documents are skipped (listed in the report). The file appears atomically.

    Raises:
        OSError: the folder cannot be read or the index cannot be written.
    """
    started = time.monotonic()
    fingerprint_ = fingerprint_ or fingerprint(folder)
    report = IndexReport(rebuilt=True)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = index_path.with_name(f".{index_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        connection = sqlite3.connect(temporary)
        with connection:
            connection.execute(
                f"CREATE VIRTUAL TABLE passages USING fts5("
                f"title, text, source UNINDEXED, location UNINDEXED, tokenize = '{TOKENIZER}')"
            )
            connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            connection.execute("CREATE TABLE common_words (word TEXT PRIMARY KEY)")
            frequency: Counter[str] = Counter()  # in how many passages each word occurs
            for path in document_files(folder):
                source = path.relative_to(folder).as_posix()
                try:
                    passages = read_passages(path, source)
                except UnreadableDocument as exc:
                    report.skipped.append((source, str(exc)))
                    continue
                report.files += 1
                report.passages += len(passages)
                rows = [(_title(p), p.text, p.source, p.location) for p in passages]
                connection.executemany(
                    "INSERT INTO passages (title, text, source, location) VALUES (?, ?, ?, ?)", rows
                )
                for title, text, _source, _location in rows:
                    frequency.update(set(_words(f"{title} {text}")))
            connection.executemany(
                "INSERT INTO common_words (word) VALUES (?)",
                [(w,) for w, count in frequency.items() if count > report.passages / 2],
            )
            connection.execute("INSERT INTO passages (passages) VALUES ('optimize')")
            connection.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("fingerprint", fingerprint_), ("passages", str(report.passages)),
                 ("files", str(report.files)), ("built_at", f"{time.time():.3f}")],
            )
        connection.close()
        os.replace(temporary, index_path)
    finally:
        temporary.unlink(missing_ok=True)
    report.seconds = time.monotonic() - started
    return report


def match_expression(query: str, common: frozenset[str] = frozenset()) -> str | None:
    """An FTS5 MATCH expression for free text: its words, each quoted, joined with OR.

    Quoting keeps FTS5's query syntax (``AND``, ``NEAR``, ``*``, ``"``, ``:``) out of the
    caller's words; BM25 then ranks passages by how many of the words, and how rare ones,
    they contain. Words in `common` are left out unless nothing else is left. None when
    the text has no words.
    """
    words = list(dict.fromkeys(_words(query)))
    words = ([w for w in words if w not in common] or words)[:MAX_QUERY_TERMS]
    return " OR ".join(f'"{w}"' for w in words) if words else None


class KnowledgeBase:
    """Searches one index file (read-only; safe to share between threads).

    Use `KnowledgeBase.open`; `close` when done.
    """

    def __init__(self, connection: sqlite3.Connection, passages: int, common: frozenset[str]) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._common = common
        self.passages = passages

    @classmethod
    def open(cls, index_path: Path) -> KnowledgeBase | None:
        """The index at `index_path`, or None when there is none or it holds no passage."""
        try:
            connection = _connect_read_only(index_path)
            passages = _count(connection)
            common = frozenset(word for (word,) in connection.execute("SELECT word FROM common_words"))
        except sqlite3.Error:
            return None
        if not passages:
            connection.close()
            return None
        return cls(connection, passages, common)

    def search(self, query: str, limit: int = 3) -> list[Hit]:
        """The `limit` passages that best match `query` (BM25), best first; [] if none match."""
        expression = match_expression(query, self._common)
        if expression is None:
            return []
        with self._lock:
            # Rank row ids only, then read the winners: sorting whole rows would copy the
            # text of every matching passage.
            ranked = self._connection.execute(
                f"SELECT rowid, bm25(passages, {TITLE_WEIGHT}, {TEXT_WEIGHT}) AS score "
                "FROM passages WHERE passages MATCH ? ORDER BY score LIMIT ?",
                (expression, limit),
            ).fetchall()
            hits = []
            for rowid, score in ranked:
                source, location, text = self._connection.execute(
                    "SELECT source, location, text FROM passages WHERE rowid = ?", (rowid,)
                ).fetchone()
                hits.append(Hit(Passage(source, location, text), score))
        return hits

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def format_hits(hits: list[Hit]) -> str:
    """The tool's answer to the model: numbered passages, each with its citation."""
    if not hits:
        return "No passage in the documents matches that question. Say you could not find it there."
    parts = [
        "Passages from the documents, best match first. Answer only from them and say which "
        "document the answer comes from (its name as written after the number, without the file extension)."
    ]
    for number, hit in enumerate(hits, start=1):
        parts.append(f"[{number}] {hit.passage.citation}\n{hit.passage.text}")
    return "\n\n".join(parts)


def _words(text: str) -> list[str]:
    """The words of a text as searches see them (lower case, Unicode word characters)."""
    return [w.lower() for w in _WORD.findall(text)]


def _title(passage: Passage) -> str:
    """The searchable title of a passage: its file name's words and its heading path."""
    stem = Path(passage.source).with_suffix("").as_posix()
    return f"{' '.join(_WORD.findall(stem.replace('_', ' ')))} {passage.location}".strip()


def _connect_read_only(index_path: Path) -> sqlite3.Connection:
    if not index_path.is_file():
        raise sqlite3.OperationalError(f"no index at {index_path}")
    return sqlite3.connect(f"{index_path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)


def _count(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT value FROM meta WHERE key = 'passages'").fetchone()
    return int(row[0]) if row else 0


def _stored_count(index_path: Path) -> int:
    try:
        with closing(_connect_read_only(index_path)) as connection:
            return _count(connection)
    except sqlite3.Error:
        return 0


def main(argv: list[str]) -> int:
    """`python -m voice_agent.knowledge index [--force] | search QUERY [--limit N]`.

    Reads `KNOWLEDGE_DIR` and `KNOWLEDGE_INDEX_PATH` from the agent's settings. Exit codes:
    0 done, 1 no index to search, 2 bad settings or folder.
    """
    import argparse
    import sys

    from pydantic import ValidationError

    from .settings import AgentSettings, describe_errors

    parser = argparse.ArgumentParser(prog="knowledge", description="Index and search the knowledge folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    index_p = sub.add_parser("index", help="index KNOWLEDGE_DIR if it changed since the last index")
    index_p.add_argument("--force", action="store_true", help="index it even if it did not change")
    search_p = sub.add_parser("search", help="show what search_knowledge returns for a question")
    search_p.add_argument("query")
    search_p.add_argument("--limit", type=int, default=None, help="passages (default KNOWLEDGE_RESULTS)")
    args = parser.parse_args(argv)
    try:
        settings = AgentSettings()
    except ValidationError as exc:
        for line in describe_errors(exc):
            print(f"knowledge: {line}", file=sys.stderr)
        return 2
    if settings.knowledge_dir is None:
        print("knowledge: KNOWLEDGE_DIR is not set (in .env): nothing to index", file=sys.stderr)
        return 2
    if args.command == "index":
        try:
            report = ensure_index(settings.knowledge_dir, settings.knowledge_index_path, force=args.force)
        except OSError as exc:
            print(f"knowledge: {exc.strerror or exc}: {exc.filename or settings.knowledge_dir}", file=sys.stderr)
            return 2
        for source, reason in report.skipped:
            print(f"knowledge: skipped {source}: {reason}", file=sys.stderr)
        if report.rebuilt:
            print(f"indexed {report.passages} passages from {report.files} files in {report.seconds:.2f} s "
                  f"-> {settings.knowledge_index_path}")
        else:
            print(f"up to date: {report.passages} passages ({settings.knowledge_index_path})")
        return 0
    knowledge = KnowledgeBase.open(settings.knowledge_index_path)
    if knowledge is None:
        print("knowledge: no passages indexed yet: run `./scripts/knowledge index`", file=sys.stderr)
        return 1
    started = time.perf_counter()
    hits = knowledge.search(args.query, args.limit or settings.knowledge_results)
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(format_hits(hits))
    print(f"\n({len(hits)} of {knowledge.passages} passages, {elapsed_ms:.1f} ms)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
