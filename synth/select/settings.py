"""What selection can be told (``SelectSettings``, all of it fingerprinted) and the reasons a row is not selected.

The stage and how it decides: ``synth.select.select``; the methods over arrays: ``synth.select.methods``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from synth.config import option
from synth.errors import SynthError
from synth.lang import LanguageError, canonical
from synth.select.relevance import AUTO, OFF_TOPIC, min_relevance_flag, parse_min_relevance

REASONS = ("quality_missing", "quality_below_min", OFF_TOPIC, "embedding_missing", "near_duplicate", "too_similar",
           "cluster_quota", "lang_quota", "over_target")
CODE = {r: i + 1 for i, r in enumerate(REASONS)}  # 0: selected
METHODS = ("greedy", "dedup", "kmeans", "none")
INDEXES = ("auto", "flat", "ivf")
ALGORITHM = "2"  # bump when the same settings would select differently (2: flat exact past the match cap)
RANK_BY = ("expected", "quality")


class SelectError(SynthError, ValueError):
    """Selection cannot run on this input or with these settings; the message says why and what to do."""


def _canonical_quota(quota: dict[str, int]) -> dict[str, int]:
    """Quota keys as the canonical codes rows hold: ``sw=1000`` caps the ``swh`` rows."""
    out: dict[str, int] = {}
    for code, n in quota.items():
        try:
            lang = canonical(code)
        except LanguageError as e:
            raise SelectError(f"--per-lang-quota: {e}") from e
        if out.get(lang, n) != n:
            raise SelectError(f"--per-lang-quota gives {lang} two quotas ({out[lang]} and {n} for {code!r})")
        out[lang] = n
    return out


def parse_lang_quota(text: str | None) -> dict[str, int] | int | None:
    """``"500"`` → 500 for every language; ``"swh=1000,yor=200"`` → per language (others unlimited)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        if "=" not in text:
            return int(text)
        out = {}
        for part in text.split(","):
            lang, _, n = part.partition("=")
            out[lang.strip()] = int(n)
        return out
    except ValueError as e:
        raise SelectError(f"--per-lang-quota: expected N or lang=N[,lang=N…], not {text!r}") from e


@dataclass
class SelectSettings:
    """Everything ``synth select`` can be told; all of it changes which rows are selected (fingerprinted)."""

    # rows the judge scored below this leave (quality_below_min): 3 of 5 is the rubric's "answers in part", below
    # it the judge says the response misses what was asked (bench/qc.py); None keeps every judged row
    min_quality: float | None = option(3.0, "Minimum judge score: rows the judge rates poor leave (0 keeps all).",
                                       also=("audit",))
    # rows whose instruction and response match less than this leave (off_topic): "auto" is the threshold measured
    # for the model that scored ``relevance`` (synth/data/relevance.toml); None: no relevance check
    min_relevance: float | str | None = option(AUTO, "Minimum instruction-response relevance: 'auto' (the threshold "
                                               "measured for the embedding model), 'off', or a number.",
                                               parse=min_relevance_flag, also=("audit",))
    target: int | None = None  # keep exactly this many (or all that pass, if fewer)
    keep: float | None = option(None, "Or: the fraction of rows to keep.")
    per_lang_quota: dict[str, int] | int | None = option(None, "At most N rows for every language, or sw=1000,yor=200.",
                                                         parse=parse_lang_quota)
    method: str = option("greedy", "greedy (DEITA-style), dedup, kmeans or none.")
    tau: float = option(0.9, "Cosine similarity at which two instructions are too alike.")
    clusters: int | None = option(None, "k-means clusters (default: about the square root of the eligible rows, "
                                  "at most the target).")
    seed: int = option(0, "Seed for k-means and ties.")
    index: str = "auto"  # "auto" | "flat" | "ivf"
    nprobe: int = 3  # IVF: cells searched per row
    nlist: int | None = None  # IVF cells (default: about sqrt(2 x eligible rows))
    rank_by: str = option("expected", "'expected' (the judge's expected score where it gave logprobs, else the "
                          "integer) or 'quality' (the integer score).")

    def __post_init__(self) -> None:
        self.min_relevance = parse_min_relevance(self.min_relevance)
        if self.method not in METHODS:
            raise SelectError(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.rank_by not in RANK_BY:
            raise SelectError(f"rank_by must be one of {', '.join(RANK_BY)}, not {self.rank_by!r}")
        if self.index not in INDEXES:
            raise SelectError(f"--index must be one of {', '.join(INDEXES)}, not {self.index!r}")
        if self.target is not None and self.keep is not None:
            raise SelectError("give a target number of rows or a fraction to keep, not both")
        if self.target is not None and self.target < 0:
            raise SelectError(f"--target must be >= 0, not {self.target}")
        if self.keep is not None and not 0 < self.keep <= 1:
            raise SelectError(f"--keep is a fraction in (0, 1], not {self.keep}")
        if not -1 < self.tau <= 1:
            raise SelectError(f"--tau is a cosine similarity in (-1, 1], not {self.tau}")
        if self.clusters is not None and self.clusters < 1:
            raise SelectError(f"--clusters must be >= 1, not {self.clusters}")
        if self.nprobe < 1 or (self.nlist is not None and self.nlist < 1):
            raise SelectError("--nprobe and --nlist must be >= 1")
        quota = self.per_lang_quota
        if isinstance(quota, dict):
            bad = {k: v for k, v in quota.items() if not isinstance(v, int) or v < 0}
            if bad:
                raise SelectError(f"per-language quotas must be integers >= 0: {bad}")
            self.per_lang_quota = _canonical_quota(quota)
        elif quota is not None and (not isinstance(quota, int) or quota < 0):
            raise SelectError(f"--per-lang-quota must be an integer >= 0 or lang=N pairs, not {quota!r}")

    def resolved_target(self, rows: int) -> int | None:
        if self.keep is not None:
            return int(math.floor(self.keep * rows + 0.5))
        return self.target
