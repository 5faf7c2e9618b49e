#!/usr/bin/env python3
"""How clean `swaa-chat extract` is against pdftotext, per 1,000 of pdftotext's words.

    scripts/text-quality.py [--bin target/release/swaa-chat] FILE.pdf ...

Both texts are split into words (NFC, punctuation at the ends stripped, page markers and
numbers ignored). For each PDF it prints, per 1,000 words of pdftotext's text:
  lost    words of pdftotext's text that never occur in ours (weighted by occurrences),
  glued   our words that pdftotext does not have but that are two of its words run together
          ("libexecdirThe"),
  broken  our other words that pdftotext does not have ("M¨oller", "c⃝"),
  leaders runs of table-of-contents dots (". . . .") left in our text,
and the words of each text. pdftotext keeps running headers, so words it repeats on every
page count as lost only when they never occur in our text at all.
Needs pdftotext (apt-get install -y poppler-utils).
"""
import argparse
import collections
import re
import subprocess
import sys
import unicodedata

MARKER = re.compile(r"^── (page|chapter|section) \d+(: .*)? ──$")
LEADERS = re.compile(r"(?:\. ?){4,}|…{2,}")
EDGE = "\"'“”‘’()[]{}<>,.;:!?*…"


def words(text):
    out = []
    for line in text.splitlines():
        if MARKER.match(line.strip()):
            continue
        for w in unicodedata.normalize("NFC", line).split():
            w = w.strip(EDGE)
            # Numbers (page numbers, dot-leader targets) say nothing about text quality.
            if w and not re.fullmatch(r"[\d.,\-–/]+|[ivxlc]+", w):
                out.append(w)
    return out


def measure(pdf, binary):
    ours = subprocess.run([binary, "extract", pdf], capture_output=True, text=True)
    if ours.returncode != 0:
        sys.exit(f"{binary} extract {pdf} failed: {ours.stderr.strip()}")
    ref = subprocess.run(["pdftotext", "-enc", "UTF-8", pdf, "-"], capture_output=True,
                         text=True, check=True).stdout
    rw, ow = words(ref), words(ours.stdout)
    rc, oc = collections.Counter(rw), collections.Counter(ow)
    lost = sum(n for w, n in rc.items() if w not in oc)
    glued = broken = 0
    for w, n in oc.items():
        if w in rc:
            continue
        two = any(w[:i].strip(EDGE) in rc and w[i:].strip(EDGE) in rc for i in range(2, len(w) - 1))
        if two:
            glued += n
        else:
            broken += n
    leaders = len(LEADERS.findall(ours.stdout))
    per = 1000 / max(len(rw), 1)
    return len(rw), len(ow), lost * per, glued * per, broken * per, leaders


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/swaa-chat")
    ap.add_argument("pdfs", nargs="+")
    a = ap.parse_args()
    print("| PDF | pdftotext words | our words | lost ‰ | glued ‰ | broken ‰ | dot leaders |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for pdf in a.pdfs:
        r, o, lost, glued, broken, leaders = measure(pdf, a.bin)
        name = pdf.rsplit("/", 1)[-1]
        print(f"| {name} | {r:,} | {o:,} | {lost:.1f} | {glued:.1f} | {broken:.1f} | {leaders:,} |")


if __name__ == "__main__":
    main()
