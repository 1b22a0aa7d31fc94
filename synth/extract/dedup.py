"""Exact and near-duplicate detection across the whole corpus, not per shard.

Per fragment (in parallel, inside the extract stage) we keep two small columns: a 64-bit hash of the
normalised text, and MinHash-LSH band keys (datasketch MinHash over word shingles, banded). The global pass
then only needs those columns, in corpus order: a fragment is a duplicate when an earlier one has the same
exact hash, or shares any band key with an earlier one. Keep-first makes the result independent of how the
corpus was sharded or how far it was read.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

WORD = re.compile(r"\w+", re.UNICODE)
KEEP, EXACT, NEAR = 0, 1, 2
REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate"}
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class MinHashSettings:
    """Bands × rows = permutations. 16×8 flags pairs above Jaccard ~0.7 with high probability."""

    bands: int = 16
    rows: int = 8
    ngram: int = 5
    seed: int = 1

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


def exact_hash(text: str) -> int:
    """Hash of the text with case, punctuation and spacing removed (signed 64-bit, for Arrow)."""
    key = " ".join(WORD.findall(unicodedata.normalize("NFKC", text).casefold()))
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little", signed=True)


def shingles(text: str, n: int) -> set[bytes]:
    """Word n-grams; character n-grams for text written without spaces (Chinese, Thai…)."""
    words = WORD.findall(text.casefold())
    if len(words) < 2 * n and len(text) > 8 * len(words):  # few "words" for much text: no spacing
        chars = "".join(words)
        return {chars[i : i + n].encode() for i in range(max(1, len(chars) - n + 1))}
    if len(words) < n:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads band values so summing them makes a good band key."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def band_keys(texts: list[str], s: MinHashSettings = MinHashSettings()) -> np.ndarray:
    """(n, bands) int64 LSH band keys, one row per text."""
    if not texts:
        return np.zeros((0, s.bands), dtype=np.int64)
    from datasketch import MinHash  # here: datasketch loads scipy, which `synth --help` does not need

    mhs = MinHash.bulk([shingles(t, s.ngram) for t in texts], num_perm=s.num_perm, seed=s.seed)
    sig = np.stack([m.hashvalues for m in mhs]).astype(np.uint64).reshape(len(texts), s.bands, s.rows)
    weights = _mix(np.arange(1, s.rows + 1, dtype=np.uint64))
    with np.errstate(over="ignore"):
        keys = (_mix(sig + np.uint64(1)) * weights).sum(axis=2, dtype=np.uint64)
    return keys.view(np.int64)


def _dup_of_earlier(keys: np.ndarray) -> np.ndarray:
    """True where the same key occurred at a smaller index."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)] < np.arange(len(keys))


def find_duplicates(exact: np.ndarray, bands: np.ndarray, candidate: np.ndarray | None = None) -> np.ndarray:
    """Per row, KEEP, EXACT or NEAR, in the given (corpus) order.

    ``candidate`` marks the rows that take part (e.g. those that passed the quality thresholds); the others get
    KEEP here and are ignored as matches, so a rejected fragment never knocks out a good one.
    """
    n = len(exact)
    out = np.full(n, KEEP, dtype=np.int8)
    idx = np.arange(n) if candidate is None else np.flatnonzero(candidate)
    if len(idx) == 0:
        return out
    ex = _dup_of_earlier(np.asarray(exact)[idx])
    near = np.zeros(len(idx), dtype=bool)
    b = np.asarray(bands)[idx]
    for j in range(b.shape[1]):
        near |= _dup_of_earlier(b[:, j])
    res = np.where(ex, EXACT, np.where(near, NEAR, KEEP)).astype(np.int8)
    out[idx] = res
    return out
