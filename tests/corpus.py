"""A small knowledge folder made by the tests: Markdown, HTML, plain text and a real PDF.

Each fact lives in exactly one file, so a test can tell whether a search found the right
passage and names the right source. The PDF is built with fpdf2 (two pages; the returns
period is on page 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF


@dataclass(frozen=True)
class Fact:
    """A question, the words that answer it, and the citation of the passage holding them."""

    question: str
    answer: str
    citation: str


RETURNS = Fact("How many days do I have to return a product for a refund?", "45 days", "returns-policy.pdf, page 2")
WARRANTY = Fact("What warranty does the HP-200 heat pump have?", "seven-year parts warranty",
                "warranty.md › Warranty › Heat pumps")
HOURS = Fact("When is the support hotline open?", "weekdays from 8:00 to 18:00", "support.html › Support › Opening hours")
INSTALL = Fact("How far ahead are installation appointments booked?", "two weeks ahead", "notes.txt")
FACTS = (RETURNS, WARRANTY, HOURS, INSTALL)

WARRANTY_MD = """# Warranty

Every Acme product comes with a warranty from the day it is installed.

## Heat pumps

The HP-200 heat pump carries a seven-year parts warranty and two years on labour.
Register it online within 30 days to keep the warranty valid.

## Thermostats

Smart thermostats carry a two-year warranty. Batteries are not covered.
"""

SUPPORT_HTML = """<!doctype html>
<html><head><title>Acme support</title>
<style>body { font-family: sans-serif; }</style>
<script>var tracking = "refund warranty hotline";</script></head>
<body>
<h1>Support</h1>
<p>Acme support helps with installed heat pumps and thermostats.</p>
<h2>Opening hours</h2>
<p>The support hotline is open <b>weekdays from 8:00 to 18:00</b>, and Saturdays from 9:00 to 12:00.</p>
<h2>Emergencies</h2>
<p>For a gas smell, leave the building and call the gas emergency number.</p>
</body></html>
"""

NOTES_TXT = """Installation

Installation appointments are booked two weeks ahead. An engineer calls the day before.

Bring the product's serial number to every appointment.
"""

RETURNS_PAGES = (
    "Orders and delivery. Orders placed before noon ship the same working day. Delivery takes "
    "three to five working days within the country.",
    "Returns and refunds. You may return any product within 45 days of delivery for a full "
    "refund. Installed heat pumps can be returned only if they are faulty. Refunds reach your "
    "account within ten working days.",
)


def write_pdf(path: Path, pages: tuple[str, ...]) -> None:
    """A PDF with one page per text (fpdf2, a core font)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))


def write_corpus(folder: Path) -> Path:
    """Write the sample documents into `folder` (created); returns it.

    Besides the four documents it holds what must not be indexed: a hidden folder, a file
    of another type, and a broken PDF (reported as skipped).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "warranty.md").write_text(WARRANTY_MD, encoding="utf-8")
    (folder / "support.html").write_text(SUPPORT_HTML, encoding="utf-8")
    (folder / "notes.txt").write_text(NOTES_TXT, encoding="utf-8")
    write_pdf(folder / "returns-policy.pdf", RETURNS_PAGES)
    (folder / ".drafts").mkdir(exist_ok=True)
    (folder / ".drafts" / "unreleased.md").write_text("# Secret\nThe HP-300 launches in March.\n", encoding="utf-8")
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF body")
    return folder
