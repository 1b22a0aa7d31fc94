"""The selection over arrays: ``select_arrays`` settles every row (selected, or the reason it is not).

Methods (cosine similarity = inner product of L2-normalised embeddings; ``tau`` is a cosine):

* ``none``: the top rows by quality (with ``target``/``keep`` and quotas).
* ``dedup``: pairwise near-duplicate removal: a row leaves (``near_duplicate``) when a row earlier in priority
  order (higher quality) has cosine >= tau with it, kept or not (as SemDeDup); then the top rows by quality.
* ``greedy`` (DEITA): walk the priority order; accept a row when its nearest *accepted* row has cosine < tau
  (else ``too_similar``); stop at the target. A row similar only to rows that were not accepted stays.
* ``kmeans``: ``faiss.Kmeans`` (seeded, spherical) over the eligible rows, then a per-cluster quota filled by
  quality: round r takes the r-th best row of every cluster (best first within the round) until the target;
  so every cluster with an eligible row is covered when ``target >= clusters``, leftovers of small clusters go
  round-robin to the others. Not selected: ``cluster_quota``. Every row with an embedding gets its cluster.

How greedy and dedup run (FAISS does every neighbour search). Both only need, for each row, its *earlier* rows
(in priority order) at cosine >= tau: dedup drops a row that has any, greedy one that has an accepted one. So
the rows are turned once into unit float32 vectors in priority order, the pairs (later row, earlier row) with
cosine >= tau are found, and then a single pass in order settles every row exactly from those pairs, with the
language caps and the target (rows with no pair are accepted without a look, so the pass is cheap). With a
target the rows are taken in segments (about 1.25 x what is still needed), so a small target stops early.

Finding the pairs: ``synth.select.neighbours`` (exact with ``index="flat"``, FAISS IVF cells with ``"ivf"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from synth.select.neighbours import ASSIGN_BATCH, Join, Pool, nearest, unit_rows
from synth.select.relevance import OFF_TOPIC
from synth.select.settings import CODE, SelectError, SelectSettings
from synth.stats import UNKNOWN_LANG

MIN_SEGMENT = 4096  # with a target: rows taken per step at least
KMEANS_SAMPLE_PER_CLUSTER = 64

# --- the selection over arrays -----------------------------------------------------------------------------


def select_arrays(
    emb: np.ndarray | None,
    quality: np.ndarray,
    s: SelectSettings,
    *,
    lang: np.ndarray | None = None,
    lang_names: list[str] | None = None,
    has_embedding: np.ndarray | None = None,
    relevance: np.ndarray | None = None,
    tiebreak: np.ndarray | None = None,
    rank: np.ndarray | None = None,
    rows: int | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Select over arrays: ``emb`` (n, d) any float dtype, ``quality`` (n,) with NaN for missing, ``lang`` (n,)
    integer codes into ``lang_names``, ``tiebreak`` (n,) integers ordering equal scores (default: row index),
    ``rank`` (n,) the priority score where it is finite (default, and elsewhere: ``quality``), ``relevance`` (n,)
    the instruction-response match, NaN where not scored (``min_relevance`` must be a number by now).
    Returns per-row reason codes (0 = selected, else ``REASONS[code - 1]``), clusters (-1 when none) and info.
    ``threads`` (default: the CPUs this process may use) only changes the speed, never the result."""
    t0 = time.perf_counter()
    n = len(quality)
    rows = n if rows is None else rows
    quality = np.asarray(quality, dtype=np.float64)
    codes = np.zeros(n, dtype=np.int8)
    cluster = np.full(n, -1, dtype=np.int32)
    needs_emb = s.method != "none"
    if needs_emb and emb is None:
        raise SelectError(f"method {s.method!r} needs embeddings")
    missing_q = np.isnan(quality)
    codes[missing_q] = CODE["quality_missing"]
    if s.min_quality is not None:
        codes[(codes == 0) & (quality < s.min_quality)] = CODE["quality_below_min"]
    if relevance is not None and isinstance(s.min_relevance, float):
        codes[(codes == 0) & (np.asarray(relevance, dtype=np.float64) < s.min_relevance)] = CODE[OFF_TOPIC]
    if needs_emb and has_embedding is not None:
        codes[(codes == 0) & ~has_embedding] = CODE["embedding_missing"]
    eligible = np.flatnonzero(codes == 0)
    tie = np.arange(n) if tiebreak is None else np.asarray(tiebreak)
    score = quality if rank is None else np.where(np.isfinite(rank), rank, quality)
    order = eligible[np.lexsort((tie[eligible], -score[eligible]))]
    target = s.resolved_target(rows)
    caps = _caps(s.per_lang_quota, lang_names or [UNKNOWN_LANG])
    lang = np.zeros(n, dtype=np.int32) if lang is None else np.asarray(lang, dtype=np.int32)
    info: dict[str, Any] = {"eligible": int(len(order)), "target": target, "method": s.method}

    out = _Choice(codes, cluster, info)
    with Pool(threads) as pool:
        ranked = _Ranked(emb, order, lang, caps, target, s, has_embedding, pool)
        if s.method == "kmeans" and len(order):
            _kmeans(ranked, out)
        else:
            _walk(ranked, {"greedy": "greedy", "dedup": "dedup"}.get(s.method), out)
    info["selected"] = int((codes == 0).sum())
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return codes, cluster, info


@dataclass
class _Ranked:
    """What a selection method chooses from: the eligible rows best first (``order``), every row's embedding and
    language code, the rows per language at most (``caps``), how many to take (``target``; None: all that pass)."""

    emb: np.ndarray | None
    order: np.ndarray
    lang: np.ndarray
    caps: np.ndarray | None
    target: int | None
    settings: SelectSettings
    has_embedding: np.ndarray | None
    pool: Pool


@dataclass
class _Choice:
    """What a selection method decides, per row: its reason code (0: selected) and cluster (-1: none); and info."""

    codes: np.ndarray
    cluster: np.ndarray
    info: dict[str, Any]


def _caps(quota: dict[str, int] | int | None, names: list[str]) -> np.ndarray | None:
    if quota is None:
        return None
    if isinstance(quota, int):
        return np.full(len(names), quota, dtype=np.int64)
    big = np.iinfo(np.int64).max
    return np.array([quota.get(name, big) for name in names], dtype=np.int64)


def _walk(r: _Ranked, mode: str | None, out: _Choice) -> None:
    """Greedy / dedup (``mode``) / plain top-N (None) over the priority order, one segment at a time (see the
    module notes)."""
    order, target = r.order, r.target
    n = len(order)
    settle = _Settle(mode, n, r.lang[order] if r.caps is not None else None, r.caps)
    join = Join(r.emb, order, r.settings, out.info, r.pool) if mode else None
    taken, start = 0, 0
    while start < n and (target is None or taken < target):
        end = n
        if target is not None and join is not None:  # only as far as the target is likely to need
            rate = taken / start if start else 1.0
            end = min(n, start + max(MIN_SEGMENT, int((target - taken) / max(rate, 0.05) * 1.25)))
        src = dst = np.zeros(0, dtype=np.int64)
        if join is not None:
            src, dst = join.earlier_matches(start, end)
        settle.segment(start, end, src, dst, join.accepted_match if join is not None else None)
        stop = end
        if target is not None:
            cum = np.cumsum(settle.acc[start:end])
            if len(cum) and cum[-1] >= target - taken:
                stop = start + int(np.searchsorted(cum, target - taken)) + 1
        taken += int(settle.acc[start:stop].sum())
        out.codes[order[start:stop]] = settle.reason[start:stop]
        start = stop
    out.codes[order[start:]] = CODE["over_target"]
    if join is not None:
        out.info.update(join.info)


def _groups(src: np.ndarray, dst: np.ndarray):
    """(row, its earlier matches) for each row that has any, rows ascending."""
    if not len(src):
        return
    o = np.lexsort((dst, src))
    src, dst = src[o], dst[o]
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
    ends = np.r_[starts[1:], len(src)]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(src[a]), dst[a:b]


class _Settle:
    """The walk's decisions by position in the priority order: accepted (``acc``) or the reason code it left
    under (``reason``), and each language's count so far against its cap."""

    def __init__(self, mode: str | None, n: int, lang_pos: np.ndarray | None, caps: np.ndarray | None) -> None:
        self.mode, self.lang_pos, self.caps = mode, lang_pos, caps
        self.reject = CODE["too_similar"] if mode == "greedy" else CODE["near_duplicate"]
        self.reason = np.zeros(n, dtype=np.int8)
        self.acc = np.zeros(n, dtype=bool)
        self.used = np.zeros(len(caps), dtype=np.int64) if caps is not None else None

    def segment(self, start: int, end: int, src: np.ndarray, dst: np.ndarray,
                recheck: Callable[[int, np.ndarray], bool] | None = None) -> None:
        """Decide positions ``start..end`` in order, given each row's earlier matches (``src`` → ``dst``). Dedup
        refuses a row with any earlier match; greedy one with an accepted earlier match. Without caps only rows
        with matches need a look (the others are accepted), in order; with caps every row is visited in order, as
        its language's count depends on all before it. ``recheck(i, acc)``: whether row ``i`` has an accepted
        earlier row beyond its (capped) list of matches."""
        acc, reason = self.acc, self.reason
        reason[start:end] = 0
        acc[start:end] = True

        def refused(i: int, earlier: np.ndarray) -> bool:
            if self.mode == "dedup" or acc[earlier].any():
                return True
            return recheck is not None and recheck(i, acc)

        if self.caps is None:
            for i, earlier in _groups(src, dst):
                if refused(i, earlier):
                    acc[i], reason[i] = False, self.reject
            return
        matches = dict(_groups(src, dst))
        langs = self.lang_pos[start:end].tolist()
        for i in range(start, end):
            earlier = matches.get(i)
            lg = langs[i - start]
            if earlier is not None and refused(i, earlier):
                acc[i], reason[i] = False, self.reject
            elif self.used[lg] >= self.caps[lg]:
                acc[i], reason[i] = False, CODE["lang_quota"]
            else:
                self.used[lg] += 1


# --- k-means --------------------------------------------------------------------------------------------------


def _kmeans(r: _Ranked, out: _Choice) -> None:
    """Clusters of the embeddings; with a target, the best rows of every cluster in turn (see the module notes)."""
    import faiss

    emb, order, lang, caps, target, s = r.emb, r.order, r.lang, r.caps, r.target, r.settings
    codes, cluster, info = out.codes, out.cluster, out.info
    n = len(order)
    k = s.clusters or max(1, round(math.sqrt(n)))
    if target is not None:
        k = min(k, max(1, target))
    k = min(k, n)
    rng = np.random.default_rng(s.seed)
    sample = np.sort(rng.choice(order, size=min(n, k * KMEANS_SAMPLE_PER_CLUSTER), replace=False))
    km = faiss.Kmeans(emb.shape[1], k, niter=20, seed=s.seed + 1, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=KMEANS_SAMPLE_PER_CLUSTER)
    km.train(unit_rows(emb, sample))
    rows_with = np.arange(len(codes)) if r.has_embedding is None else np.flatnonzero(r.has_embedding)

    def label(a: int) -> None:  # every row with an embedding gets its cluster, eligible or not
        part = rows_with[a:a + ASSIGN_BATCH]
        cluster[part] = nearest(km.centroids, unit_rows(emb, part), 1)[1][:, 0]

    r.pool.map(label, list(range(0, len(rows_with), ASSIGN_BATCH)))
    info.update(clusters=k)
    if target is None:
        return
    # round r holds the r-th best row of every cluster; within a round, the better rows come first
    cl = cluster[order]
    by_cluster = np.lexsort((np.arange(n), cl))
    starts = np.r_[0, np.flatnonzero(np.diff(cl[by_cluster])) + 1]
    rank = np.empty(n, dtype=np.int64)
    rank[by_cluster] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    fill = order[np.lexsort((np.arange(n), rank))]
    ok = np.ones(n, dtype=bool)
    if caps is not None:
        lg = lang[fill]
        nth = np.empty(n, dtype=np.int64)  # how many rows of the same language came before in fill order
        by_lang = np.lexsort((np.arange(n), lg))
        lstarts = np.r_[0, np.flatnonzero(np.diff(lg[by_lang])) + 1]
        nth[by_lang] = np.arange(n) - np.repeat(lstarts, np.diff(np.r_[lstarts, n]))
        ok = nth < caps[lg]
    cum = np.cumsum(ok)
    stop = n if cum[-1] < target else int(np.searchsorted(cum, target)) + 1
    if target == 0:
        stop = 0
    head = fill[:stop]
    codes[head[~ok[:stop]]] = CODE["lang_quota"]
    codes[fill[stop:]] = CODE["cluster_quota"]
    info["clusters_covered"] = int(len(np.unique(cluster[head[ok[:stop]]])))
