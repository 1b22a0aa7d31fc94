"""Stage 1b, decontaminate: fragments that overlap the evaluation sets a user reports on leave as ``contaminated``.

Native web text often contains benchmark text (XLSUM articles, FLORES-200 sentences, Belebele passages, translated
MMLU questions); a model tuned on it would be scored on what it was shown. Each evaluation file (JSONL, JSON,
Parquet, Arrow, or a ``datasets`` save_to_disk folder; every string value of every record counts, so any schema
works) is cut into n-grams: of words, lower-cased, or, in languages written without spaces (Chinese, Japanese,
Thai…, ``synth.lang.writes_without_spaces``), of characters. Their 64-bit hashes make one sorted ``uint64``
array; a fragment's n-grams are hashed the same way, looked up in it with one vectorised binary search, and the
fragment leaves when the share of its n-grams found reaches ``threshold``. ``n`` and ``threshold`` are set for
all languages, and per language in ``per_lang`` (``{"cmn": {"n": 12}}``).

The same index checks the final rows' instructions at export (``final_rows_contaminated``): a generated
instruction may reproduce a benchmark question the model memorised.

Hashes: each distinct token's blake2b (8 bytes), then a polynomial over the n tokens in uint64 arithmetic; the
same on every machine and process. ``bench/decontaminate.py`` times 1M fragments against 100k evaluation items.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.config import option
from synth.errors import SynthError
from synth.gate import Gate
from synth.identity import identity
from synth.lang import canonical, writes_without_spaces

CONTAMINATED = "contaminated"
PRIME = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: the polynomial's base
NON_WORD = r"[^\p{L}\p{N}\p{M}]+"  # RE2 (Arrow) and Python's regex spell it differently: words are letters,
NON_WORD_PY = re.compile(r"[\W_]+")  # digits and marks


class DecontaminateError(SynthError, ValueError):
    """An evaluation file that cannot be read, or settings that cannot work."""


# ---------------------------------------------------------------------------------------------- n-gram hashes


def characters(text: str) -> list[str]:
    """A text written without spaces as its letters and digits, one by one (NFKC, lower case)."""
    return list(NON_WORD_PY.sub("", unicodedata.normalize("NFKC", text).lower()))


class TokenHasher:
    """blake2b of each distinct token, remembered (a corpus repeats its words far more than it adds new ones)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, toks: list[str]) -> np.ndarray:
        seen = self._seen
        for t in toks:
            if t not in seen:
                seen[t] = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
        if len(seen) > 4_000_000:  # bounded memory on a corpus with endless distinct tokens
            self._seen = {}
        return np.fromiter((seen[t] for t in toks), dtype=np.uint64, count=len(toks))

    def words(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's lower-cased words (NFKC; letters, digits and marks), hashed, one text after another, and
        how many each has. Arrow splits them; only the distinct words of the batch are hashed in Python."""
        arr = pc.utf8_lower(pc.utf8_normalize(pc.fill_null(pa.array(texts, pa.string()), ""), "NFKC"))
        split = pc.split_pattern_regex(arr, NON_WORD)
        flat, owner = pc.list_flatten(split), pc.list_parent_indices(split)
        nonempty = pc.greater(pc.binary_length(flat), 0)
        flat, owner = flat.filter(nonempty), owner.filter(nonempty).to_numpy()
        enc = pc.dictionary_encode(flat)
        distinct = self(enc.dictionary.to_pylist())
        return distinct[enc.indices.to_numpy()], np.bincount(owner, minlength=len(texts))


def ngram_hashes(token_hashes: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every n-gram of every text, hashed: ``(hashes, text index of each)``. ``token_hashes`` holds the texts'
    tokens one text after another, ``lengths`` how many each has; n-grams never cross from one text to the next."""
    m = len(token_hashes)
    if m < n:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    with np.errstate(over="ignore"):
        g = np.zeros(m - n + 1, dtype=np.uint64)
        for k in range(n):  # sum of token_k × PRIME^(n-1-k), wrapping at 2^64
            g = g * PRIME + token_hashes[k:m - n + 1 + k]
    text = np.repeat(np.arange(len(lengths)), lengths)[: m - n + 1]
    ends = np.cumsum(lengths)
    ok = np.arange(m - n + 1) + n <= ends[text]
    return g[ok], text[ok]


def text_ngrams(texts: list[str], n: int, chars: bool, hasher: TokenHasher) -> tuple[np.ndarray, np.ndarray]:
    """The n-grams of ``texts`` (of words, or of characters with ``chars``) hashed, and the text of each."""
    if not chars:
        return ngram_hashes(*hasher.words(texts), n)
    toks = [characters(t or "") for t in texts]
    lengths = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
    return ngram_hashes(hasher([c for t in toks for c in t]), lengths, n)


# ---------------------------------------------------------------------------------------------- evaluation files


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def records(path: Path) -> Iterator[Any]:
    name = path.name.lower()
    if path.is_dir() and (path / "state.json").is_file():  # datasets save_to_disk
        from synth.extract.columnar import dataset_files, ipc_batches

        for f in dataset_files(path, str(path)):
            for batch in ipc_batches(str(f)):
                yield from batch.to_pylist()
    elif name.endswith(".parquet"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
            yield from batch.to_pylist()
    elif name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".json")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            if name.endswith(".json"):
                data = json.load(f)
                yield from data if isinstance(data, list) else [data]
                return
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError as e:
                        raise DecontaminateError(f"{path}:{lineno}: not JSON ({e})") from e
    else:
        raise DecontaminateError(f"{path}: an evaluation file must be JSONL, JSON, Parquet or a datasets folder")


def eval_files(paths: list[str]) -> list[Path]:
    """The files (and datasets folders) ``paths`` name: files, folders of them, or globs."""
    from synth.extract.inputs import expand_inputs

    try:
        return expand_inputs(list(paths))
    except (OSError, ValueError) as e:
        raise DecontaminateError(f"decontaminate: {e}") from e


def eval_texts(paths: list[str]) -> Iterator[str]:
    """Every string value of every record of every evaluation file."""
    for path in eval_files(paths):
        for record in records(path):
            yield from _strings(record)


@dataclass
class EvalIndex:
    """The sorted n-gram hashes of the evaluation texts, per (n, characters or words), built on first use."""

    texts: list[str]
    _sets: dict[tuple[int, bool], np.ndarray] = field(default_factory=dict)
    _hasher: TokenHasher = field(default_factory=TokenHasher)

    @classmethod
    def from_files(cls, paths: list[str]) -> EvalIndex:
        return cls(list(eval_texts(paths)))

    def hashes(self, n: int, chars: bool) -> np.ndarray:
        if (n, chars) not in self._sets:
            parts = [text_ngrams(self.texts[i:i + 10_000], n, chars, self._hasher)[0]
                     for i in range(0, len(self.texts), 10_000)]
            self._sets[(n, chars)] = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
        return self._sets[(n, chars)]

    def overlap(self, texts: list[str], n: int, chars: bool) -> np.ndarray:
        """The share of each text's n-grams found in the evaluation texts (0 for a text shorter than n)."""
        grams, owner = text_ngrams(texts, n, chars, self._hasher)
        known = self.hashes(n, chars)
        if not len(grams) or not len(known):
            return np.zeros(len(texts))
        order = np.argsort(grams, kind="stable")  # sorted queries walk the sorted hashes in order: cache-friendly
        at = np.minimum(np.searchsorted(known, grams[order]), len(known) - 1)
        hit = np.empty(len(grams), dtype=bool)
        hit[order] = known[at] == grams[order]
        total = np.bincount(owner, minlength=len(texts))
        found = np.bincount(owner, weights=hit.astype(np.float64), minlength=len(texts))
        return np.divide(found, total, out=np.zeros(len(texts)), where=total > 0)


# ---------------------------------------------------------------------------------------------- the stage


@dataclass
class Decontaminate(Gate):
    """Drops the fragments that overlap the evaluation files in ``paths`` (none given: every row passes)."""

    key = "01_decontaminate"
    version = "1"
    paths: list[str] = option([], "Evaluation files to keep out (JSONL, Parquet, datasets folders, globs): fragments "
                              "and final rows that overlap them leave as 'contaminated'. Repeatable.",
                              flag="--decontaminate", many=True, whole=True, also=("run",))
    n: int = 8  # words per n-gram
    char_n: int = 20  # characters per n-gram, in languages written without spaces
    threshold: float = 0.05  # share of a fragment's n-grams found in the evaluation texts at which it leaves
    per_lang: dict[str, dict[str, Any]] = field(default_factory=dict)  # lang → {n, char_n, threshold}
    text_column: str = "fragment"

    def __post_init__(self) -> None:
        if isinstance(self.paths, str):
            self.paths = [self.paths]
        self.per_lang = {canonical(k): dict(v) for k, v in self.per_lang.items()}
        for lang, over in {"*": {}, **self.per_lang}.items():
            bad = set(over) - {"n", "char_n", "threshold"}
            if bad:
                raise DecontaminateError(f"[decontaminate] per_lang {lang}: unknown setting(s) {sorted(bad)}")
            s = {"n": self.n, "char_n": self.char_n, "threshold": self.threshold, **over}
            if s["n"] < 1 or s["char_n"] < 1 or not 0 < s["threshold"] <= 1:
                raise DecontaminateError(f"[decontaminate] {lang}: n and char_n must be >= 1 and threshold in "
                                         f"(0, 1], not {s}")
        if self.paths:
            eval_files(self.paths)  # a path that names nothing fails now, not at the first shard

    def params(self) -> dict[str, Any]:
        p = {k: getattr(self, k) for k in ("n", "char_n", "threshold", "per_lang", "text_column")}
        p["paths"] = [identity(f) for f in eval_files(self.paths)] if self.paths else []
        return p

    def setting(self, lang: str) -> tuple[int, bool, float]:
        """(n, characters?, threshold) for rows in ``lang``."""
        over = self.per_lang.get(lang, {})
        chars = writes_without_spaces(lang) if lang else False
        n = over.get("char_n", self.char_n) if chars else over.get("n", self.n)
        return int(n), chars, float(over.get("threshold", self.threshold))

    def setup(self) -> None:
        if self.paths and getattr(self, "_index", None) is None:
            self._index = EvalIndex.from_files(self.paths)

    def output_schema(self) -> pa.Schema | None:
        return getattr(self, "_input_schema", None)

    def decide(self, batch: pa.Table) -> list[str | None]:
        return contaminated(self, getattr(self, "_index", None), batch.column(self.text_column).to_pylist(),
                            batch.column("lang").to_pylist() if "lang" in batch.column_names else [""] * len(batch))


@dataclass
class DecontaminateFinal(Decontaminate):
    """The same check on the final rows' ``instruction`` (back-translated, so it never met stage 1's check), with
    the settings of ``[decontaminate]``: an instruction that overlaps an evaluation file leaves as
    ``contaminated``, counted in the funnel like every stage's drops."""

    key = "05_decontaminate"

    def __post_init__(self) -> None:
        self.text_column = "instruction"
        super().__post_init__()


def contaminated(settings: Decontaminate, index: EvalIndex | None, texts: list[str],
                 langs: list[str]) -> list[str | None]:
    """``contaminated`` for each text whose overlap with the evaluation texts reaches its language's threshold."""
    out: list[str | None] = [None] * len(texts)
    if index is None or not texts:
        return out
    for lang in sorted(set(langs)):
        idx = [i for i, x in enumerate(langs) if x == lang]
        n, chars, threshold = settings.setting(lang)
        share = index.overlap([texts[i] for i in idx], n, chars)
        for i, s in zip(idx, share.tolist(), strict=True):
            if s >= threshold:
                out[i] = CONTAMINATED
    return out


def card_line(params: dict[str, Any]) -> str:
    """The card's and report's line: what was checked, with which n-grams."""
    files = params.get("paths") or []
    if not files:
        return "no evaluation files given (--decontaminate PATH)"
    return (f"checked against {', '.join(files)}: {params.get('n')}-word n-grams ({params.get('char_n')} characters "
            f"without spaces), a fragment leaves at {params.get('threshold')} of its n-grams found"
            + (f"; per language {params['per_lang']}" if params.get("per_lang") else ""))
