#!/usr/bin/env python3
"""Checks books.jsonl against the fetched books (run `bash assets/books/fetch.sh` first).

Every line must parse, name an existing document, and have each accepted answer appear
(case-insensitively, quotes and whitespace folded; a variant may differ only in spacing and
punctuation) in the text of one of its evidence
sections: a PDF page as `pdftotext -f N -l N` extracts it (needs poppler-utils), or an
EPUB chapter counted as swaa-chat counts them (XHTML items in spine order; front matter
not listed in the table of contents joins the first listed chapter).
Usage: python3 assets/books/check.py [assets/books/books.jsonl]
"""
import html
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

jsonl = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("books.jsonl"))
base = jsonl.parent


def fold(s):
    s = s.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    s = s.replace("\u2013", "-").replace("\u2212", "-").replace("\u00ad", "")
    return re.sub(r"\s+", " ", s).lower()


def compact(s):
    return re.sub(r"[\W_]+", "", s)


def pdf_page(path, n):
    texts = []
    for layout in ([], ["-layout"]):
        r = subprocess.run(["pdftotext", *layout, "-f", str(n), "-l", str(n), str(path), "-"],
                           capture_output=True, text=True)
        texts.append(r.stdout)
    return "\n".join(texts)


def xhtml_text(raw):
    t = re.sub(r"(?s)<head.*?</head>", "", raw)
    t = re.sub(r"<[^>]+>", " ", t)
    return html.unescape(t)


_epubs = {}


def epub_chapters(path):
    if path in _epubs:
        return _epubs[path]
    z = zipfile.ZipFile(path)
    container = z.read("META-INF/container.xml").decode()
    opf_path = re.search(r'full-path="([^"]+)"', container).group(1)
    opf_dir = opf_path.rsplit("/", 1)[0] + "/" if "/" in opf_path else ""
    opf = z.read(opf_path).decode()
    items = {}
    for tag in re.findall(r"<item\b[^>]*>", opf):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
        items[attrs["id"]] = (opf_dir + attrs["href"], attrs.get("media-type", ""), attrs.get("properties", ""))
    spine = []
    for idref in re.findall(r'<itemref\b[^>]*idref="([^"]+)"', opf):
        if idref in items and "html" in items[idref][1] and idref not in spine:
            spine.append(idref)
    listed = set()
    for href, mt, props in items.values():
        if "nav" in props.split():
            nav = z.read(href).decode()
            nav_dir = href.rsplit("/", 1)[0] + "/" if "/" in href else ""
            listed |= {nav_dir + h.split("#")[0] for h in re.findall(r'href="([^"]+)"', nav)}
    chapters, front = [], ("" if any(items[i][0] in listed for i in spine) else None)
    for i in spine:
        text = xhtml_text(z.read(items[i][0]).decode("utf-8", "replace"))
        if front is not None and items[i][0] not in listed:
            front += text
            continue
        if not text.strip() and (front is None or not front):
            continue
        chapters.append((front or "") + text)
        front = None
    _epubs[path] = chapters
    return chapters


def section(doc, n):
    if doc.suffix == ".pdf":
        return pdf_page(doc, n)
    if doc.suffix == ".epub":
        ch = epub_chapters(doc)
        return ch[n - 1] if 0 < n <= len(ch) else ""
    return doc.read_text(errors="replace")


bad = 0
count = {}
for ln, line in enumerate(jsonl.read_text().splitlines(), 1):
    if not line.strip():
        continue
    try:
        q = json.loads(line)
    except json.JSONDecodeError as e:
        print(f"line {ln}: not JSON: {e}")
        bad += 1
        continue
    doc = base / q["document"]
    count[q["document"]] = count.get(q["document"], 0) + 1
    if not doc.is_file():
        print(f"line {ln}: {doc} missing (run fetch.sh)")
        bad += 1
        continue
    answers = q["answer"] if isinstance(q["answer"], list) else [q["answer"]]
    texts = [fold(section(doc, n)) for n in q.get("evidence", [1])]
    for a in answers:
        # Literal match, or a spacing/punctuation variant ("0.5cm" for "0.5 cm").
        if not any(fold(a) in t or compact(fold(a)) in compact(t) for t in texts):
            print(f"line {ln}: answer {a!r} not found in {q['document']} sections {q.get('evidence')}")
            bad += 1
for d, n in count.items():
    print(f"{n:3d} questions  {d}")
print(f"{sum(count.values())} questions, {bad} problems")
sys.exit(1 if bad else 0)
