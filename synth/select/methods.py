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

Finding the pairs: with ``index="flat"`` (``"auto"`` up to ``AUTO_FLAT_MAX`` eligible rows) every row is compared
with every earlier row (FAISS ``IndexFlatIP`` range search, BLAS), so the result equals the row-by-row
definition (checked against it in the tests, also where rows have hundreds of near-duplicates: a row whose
earlier matches are more than ``MATCHES_PER_CELL`` keeps the best-ranked of them, and when greedy finds none of
those accepted it compares the row with every accepted earlier row, so the cap never changes a flat result). With
``index="ivf"`` (``"auto"`` above that) rows go to the cells
of a two-level k-means quantizer (``nlist`` leaf cells of ~``CELL_SIZE`` rows under ~sqrt(4 nlist) top cells,
trained with seeded ``faiss.Kmeans`` on a sample); a row is compared with the earlier rows whose nearest cell is
among its ``nprobe`` nearest cells; each cell is one FAISS range search of all the rows probing it against the
rows it holds, and cells run on parallel threads (FAISS single-threaded in each). The approximation: a pair is
missed when the earlier row's cell is not among the later row's ``nprobe`` cells. Measured on 50k rows of a
3,000-cluster mixture with 5% planted near-duplicates (``bench/select.py``), ``nprobe=3`` lets 88 of the 2,440
near-duplicates through (3.6%) and the selected set agrees with the exact one to 99.8% (Jaccard); a missed pair keeps a
near-duplicate that exact selection drops (for dedup only that; for greedy that kept row may in turn shut out a
later one). Also, at most ``MATCHES_PER_CELL`` earlier matches are kept per row and cell (the best-ranked), which
only matters for rows with dozens of near-duplicates (IVF does not re-check them as flat does). More ``nprobe``
(or a smaller ``nlist``) is closer to exact and slower. Deterministic for a given seed, whatever the number of threads.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from synth.select.relevance import OFF_TOPIC
from synth.select.settings import CODE, SelectError, SelectSettings
from synth.stats import UNKNOWN_LANG

AUTO_FLAT_MAX = 10_000  # index="auto": exact (one cell) up to this many eligible rows, IVF cells above
CELL_SIZE = 64  # IVF: eligible rows per leaf cell (nlist = rows / CELL_SIZE unless given)
TOP_PROBE = 4  # IVF: top cells whose leaves are searched when assigning a row
TRAIN_PER_CELL = 16  # IVF: k-means training sample per leaf cell
KMEANS_NITER = 10
MIN_SEGMENT = 4096  # with a target: rows taken per step at least
ASSIGN_BATCH = 65_536
QUERY_CHUNK = 4096  # queries per range search (bounds the similarity block in memory)
DB_CHUNK = 262_144  # rows per range search index (bounds the copy; only flat on many rows needs several)
MATCHES_PER_CELL = 64  # earlier matches kept per row and cell (the best-ranked)
KMEANS_SAMPLE_PER_CLUSTER = 64

# --- the selection over arrays -----------------------------------------------------------------------------


def unit_rows(emb: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``emb[rows]`` as contiguous float32, L2-normalised (inner product = cosine); zero rows stay zero."""
    import faiss

    x = np.ascontiguousarray(emb[rows], dtype=np.float32)
    faiss.normalize_L2(x)
    return x


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

    with _Pool(threads) as pool:
        if s.method == "kmeans" and len(order):
            _kmeans(emb, order, lang, caps, target, s, codes, cluster, info, has_embedding, pool)
        else:
            mode = {"greedy": "greedy", "dedup": "dedup"}.get(s.method)
            _walk(emb, order, lang, caps, target, s, mode, codes, info, pool)
    info["selected"] = int((codes == 0).sum())
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return codes, cluster, info


class _Pool:
    """Threads that each run FAISS single-threaded, working on different cells at once. (FAISS's own OpenMP
    threads on many small products waste most of their time waiting, badly so on a loaded machine.)"""

    def __init__(self, threads: int | None) -> None:
        affinity = getattr(os, "sched_getaffinity", None)
        self.threads = max(1, threads or (len(affinity(0)) if affinity else os.cpu_count() or 1))

    def __enter__(self) -> _Pool:
        import faiss

        self._saved = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        self._pool = ThreadPoolExecutor(self.threads, initializer=faiss.omp_set_num_threads, initargs=(1,))
        return self

    def __exit__(self, *exc) -> None:
        import faiss

        self._pool.shutdown()
        faiss.omp_set_num_threads(self._saved)

    def map(self, fn, items: list) -> list:
        if self.threads == 1 or len(items) < 2:
            return [fn(item) for item in items]
        return list(self._pool.map(fn, items))


def _unit_matrix(emb: np.ndarray, rows: np.ndarray, pool: _Pool) -> np.ndarray:
    """``unit_rows(emb, rows)`` for many rows, filled in parallel chunks (one float32 copy, no temporaries)."""
    import faiss

    x = np.empty((len(rows), emb.shape[1]), dtype=np.float32)

    def fill(a: int) -> None:
        x[a:a + ASSIGN_BATCH] = emb[rows[a:a + ASSIGN_BATCH]]
        faiss.normalize_L2(x[a:a + ASSIGN_BATCH])

    pool.map(fill, list(range(0, len(rows), ASSIGN_BATCH)))
    return x


def _caps(quota: dict[str, int] | int | None, names: list[str]) -> np.ndarray | None:
    if quota is None:
        return None
    if isinstance(quota, int):
        return np.full(len(names), quota, dtype=np.int64)
    big = np.iinfo(np.int64).max
    return np.array([quota.get(name, big) for name in names], dtype=np.int64)


def _walk(emb, order, lang, caps, target, s, mode, codes, info, pool) -> None:
    """Greedy / dedup / plain top-N over the priority order, one segment at a time (see the module notes)."""
    n = len(order)
    reject = CODE["too_similar"] if mode == "greedy" else CODE["near_duplicate"]
    reason = np.zeros(n, dtype=np.int8)  # by position in the priority order
    acc = np.zeros(n, dtype=bool)
    used = np.zeros(len(caps), dtype=np.int64) if caps is not None else None
    lang_pos = lang[order] if caps is not None else None
    join = _Join(emb, order, s, info, pool) if mode else None
    taken, start = 0, 0
    while start < n and (target is None or taken < target):
        end = n
        if target is not None and join is not None:  # only as far as the target is likely to need
            rate = taken / start if start else 1.0
            end = min(n, start + max(MIN_SEGMENT, int((target - taken) / max(rate, 0.05) * 1.25)))
        src = dst = np.zeros(0, dtype=np.int64)
        if join is not None:
            src, dst = join.earlier_matches(start, end)
        reason[start:end] = 0
        acc[start:end] = True
        _settle(start, end, src, dst, mode, reject, acc, reason, lang_pos, caps, used,
                join.accepted_match if join is not None else None)
        stop = end
        if target is not None:
            cum = np.cumsum(acc[start:end])
            if len(cum) and cum[-1] >= target - taken:
                stop = start + int(np.searchsorted(cum, target - taken)) + 1
        taken += int(acc[start:stop].sum())
        codes[order[start:stop]] = reason[start:stop]
        start = stop
    codes[order[start:]] = CODE["over_target"]
    if join is not None:
        info.update(join.info)


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


def _settle(start, end, src, dst, mode, reject, acc, reason, lang_pos, caps, used, recheck=None) -> None:
    """Decide positions ``start..end`` in order. Dedup refuses a row with any earlier match; greedy one with an
    accepted earlier match. Without caps only rows with matches need a look (the others are accepted), in
    order; with caps every row is visited in order, as its language's count depends on all before it.
    ``recheck(i, acc)``: whether row ``i`` has an accepted earlier row beyond its (capped) list of matches."""

    def refused(i: int, earlier: np.ndarray) -> bool:
        if mode == "dedup" or acc[earlier].any():
            return True
        return recheck is not None and recheck(i, acc)

    if caps is None:
        for i, earlier in _groups(src, dst):
            if refused(i, earlier):
                acc[i] = False
                reason[i] = reject
        return
    matches = dict(_groups(src, dst))
    langs = lang_pos[start:end].tolist()
    for i in range(start, end):
        earlier = matches.get(i)
        lg = langs[i - start]
        if earlier is not None and refused(i, earlier):
            acc[i], reason[i] = False, reject
        elif used[lg] >= caps[lg]:
            acc[i], reason[i] = False, CODE["lang_quota"]
        else:
            used[lg] += 1


# --- neighbour search ----------------------------------------------------------------------------------------


class _Join:
    """Pairs (later row, earlier row) with cosine >= tau, found with FAISS cell by cell.

    ``flat``: one cell holding every row, so every pair is compared (exact). ``ivf``: rows are assigned to the
    cells of a two-level k-means quantizer (``nlist`` leaves under about sqrt(nlist) top cells, trained on a
    sample); a row is compared with the earlier rows whose nearest cell is among its ``nprobe`` nearest cells.
    Each cell is one FAISS range search (BLAS) of all the rows probing it against the rows it holds. At most
    ``MATCHES_PER_CELL`` earlier matches are kept per row and cell (the best-ranked ones)."""

    def __init__(self, emb: np.ndarray, order: np.ndarray, s: SelectSettings, info: dict[str, Any],
                 pool: _Pool) -> None:
        import faiss

        self.faiss, self.pool, self.tau = faiss, pool, s.tau
        n = len(order)
        t0 = time.perf_counter()
        self.x = _unit_matrix(emb, order, pool)  # by position in the priority order
        kind = s.index if s.index != "auto" else ("flat" if n <= AUTO_FLAT_MAX else "ivf")
        self.info: dict[str, Any] = {"index": kind, "t_matrix": time.perf_counter() - t0}
        self.cells: _Cells | None = None
        if kind == "ivf" and n > 1:
            t0 = time.perf_counter()
            nlist = s.nlist or max(1, round(n / CELL_SIZE))
            self.cells = _Cells(self.x, min(nlist, n), s.nprobe, s.seed, pool)
            self.info.update(nlist=self.cells.nlist, nprobe=self.cells.nprobe, t_train=time.perf_counter() - t0)
        self.info.update(t_assign=0.0, t_join=0.0, pairs=0)
        self.assign = np.zeros((n, self.cells.nprobe if self.cells else 1), dtype=np.int64)
        self.assigned = 0
        self.crowded: set[int] = set()  # positions whose matches were cut at MATCHES_PER_CELL
        self.info["rechecked"] = 0

    def accepted_match(self, i: int, acc: np.ndarray) -> bool:
        """Flat only (exact): whether a row whose matches were cut has an accepted earlier row at cosine >= tau,
        compared with every accepted earlier row (a crowded row is rare, and this is one product)."""
        if self.cells is not None or i not in self.crowded:
            return False
        self.info["rechecked"] += 1
        earlier = np.flatnonzero(acc[:i])
        return bool(len(earlier)) and bool((self.x[earlier] @ self.x[i] >= self.tau).any())

    def _assign_to(self, end: int) -> None:
        if self.cells is not None and end > self.assigned:
            chunks = list(range(self.assigned, end, ASSIGN_BATCH))
            for a, lab in zip(chunks, self.pool.map(
                    lambda a: self.cells.assign(self.x[a:min(end, a + ASSIGN_BATCH)]), chunks), strict=True):
                self.assign[a:a + len(lab)] = lab
        self.assigned = max(self.assigned, end)

    def earlier_matches(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions (src, dst), dst < src, start <= src < end, of pairs with cosine >= tau."""
        t0 = time.perf_counter()
        self._assign_to(end)
        t1 = time.perf_counter()
        self.info["t_assign"] += t1 - t0
        src, dst = self._join(start, end)
        self.info["t_join"] += time.perf_counter() - t1
        self.info["pairs"] += len(src)
        return src, dst

    def _join(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        primary = self.assign[:end, 0]
        db_order = np.argsort(primary, kind="stable")
        db_bounds = np.searchsorted(primary[db_order], np.arange(primary.max() + 2))
        probes = self.assign[start:end]
        q_cell = probes.ravel()
        q_pos = np.repeat(np.arange(start, end), probes.shape[1])
        ok = q_cell >= 0
        q_cell, q_pos = q_cell[ok], q_pos[ok]
        o = np.argsort(q_cell, kind="stable")
        q_cell, q_pos = q_cell[o], q_pos[o]
        q_bounds = np.flatnonzero(np.r_[True, q_cell[1:] != q_cell[:-1], True])
        tasks = []
        for a, b in zip(q_bounds[:-1].tolist(), q_bounds[1:].tolist(), strict=True):
            c = int(q_cell[a])
            if c + 1 >= len(db_bounds):
                continue
            db = db_order[db_bounds[c]:db_bounds[c + 1]]
            qs = q_pos[a:b]
            if not len(db) or db[0] >= qs[-1]:
                continue  # no earlier row in this cell for any of its queries
            tasks.extend((qs[q0:q0 + QUERY_CHUNK], db) for q0 in range(0, len(qs), QUERY_CHUNK))
        found = self.pool.map(self._cell_pairs, tasks)
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])

    def _cell_pairs(self, task: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        qs, db = task
        db = db[db < qs[-1]]  # only rows ranked before some query can match
        srcs, dsts = [], []
        xq = self.x[qs]
        for d0 in range(0, len(db), DB_CHUNK):  # one chunk unless the cell is huge (flat on many rows)
            part = db[d0:d0 + DB_CHUNK]
            index = self.faiss.IndexFlatIP(self.x.shape[1])
            index.add(self.x[part])
            lims, dist, idx = index.range_search(xq, _radius(self.tau))
            src = np.repeat(qs, np.diff(lims.astype(np.int64)))
            dst = part[idx]
            keep = (dst < src) & (dist >= self.tau)
            srcs.append(src[keep])
            dsts.append(dst[keep])
        src, dst = np.concatenate(srcs), np.concatenate(dsts)
        if len(src) > MATCHES_PER_CELL and np.bincount(src - qs[0]).max() > MATCHES_PER_CELL:
            o = np.lexsort((dst, src))  # keep the best-ranked matches of crowded rows
            src, dst = src[o], dst[o]
            keep = np.arange(len(src)) - np.searchsorted(src, src) < MATCHES_PER_CELL
            self.crowded.update(np.unique(src[~keep]).tolist())
            src, dst = src[keep], dst[keep]
        return src, dst


def _radius(tau: float) -> float:
    # FAISS range search keeps inner products strictly above the radius; take a hair less, then filter >= tau
    return float(np.nextafter(np.float32(tau), np.float32(-2)))


class _Cells:
    """Two-level k-means cells (FAISS): ``top`` centroids, each owning a group of ``leaf`` centroids. A row goes
    to its nearest leaves among those of its ``TOP_PROBE`` nearest top cells: about (top + TOP_PROBE x leaves
    per top) products per row instead of ``nlist``."""

    def __init__(self, x: np.ndarray, nlist: int, nprobe: int, seed: int, pool: _Pool) -> None:
        rng = np.random.default_rng(seed)
        n = len(x)
        sample = x[np.sort(rng.choice(n, size=min(n, nlist * TRAIN_PER_CELL), replace=False))]
        nlist = min(nlist, len(sample))
        ntop = max(1, min(nlist, round(math.sqrt(TOP_PROBE * nlist))))
        top = _kmeans_centroids(sample, ntop, seed)
        _, lab = _nearest(top, sample, 1)
        lab = lab[:, 0]
        sizes = np.bincount(lab, minlength=len(top))
        share = np.maximum(1, np.minimum(sizes, np.round(sizes / max(1, sizes.sum()) * nlist).astype(np.int64)))
        groups = [t for t in range(len(top)) if sizes[t]]
        trained = pool.map(lambda t: _kmeans_centroids(sample[lab == t], int(share[t]), seed + 1 + t), groups)
        self.groups = [(0, 0)] * len(top)
        first = 0
        for t, cent in zip(groups, trained, strict=True):
            self.groups[t] = (first, len(cent))
            first += len(cent)
        self.leaves = np.ascontiguousarray(np.vstack(trained))
        self.top = top
        self.nlist = len(self.leaves)
        self.nprobe = max(1, min(nprobe, self.nlist))
        self.top_probe = min(TOP_PROBE, len(top))

    def assign(self, x: np.ndarray) -> np.ndarray:
        """(n, nprobe) leaf ids, nearest first (-1 where fewer leaves were reachable)."""
        import faiss

        _, tops = _nearest(self.top, x, self.top_probe)
        heap = faiss.ResultHeap(len(x), self.nprobe, keep_max=True)
        flat_t, flat_q = tops.ravel(), np.repeat(np.arange(len(x)), tops.shape[1])
        o = np.argsort(flat_t, kind="stable")
        flat_t, flat_q = flat_t[o], flat_q[o]
        bounds = np.flatnonzero(np.r_[True, flat_t[1:] != flat_t[:-1], True])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            first, count = self.groups[int(flat_t[a])]
            if count == 0:
                continue
            q = flat_q[a:b]
            dist, idx = faiss.knn(x[q], self.leaves[first:first + count], min(self.nprobe, count),
                                  metric=faiss.METRIC_INNER_PRODUCT)
            heap.add_result_subset(q, dist, idx + first)
        heap.finalize()
        return heap.I


def _kmeans_centroids(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    import faiss

    k = max(1, min(k, len(x)))
    if k == len(x):
        return x.copy()
    km = faiss.Kmeans(x.shape[1], k, niter=KMEANS_NITER, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(TRAIN_PER_CELL, 64))
    km.train(x)
    return km.centroids


def _nearest(centroids: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    return faiss.knn(x, centroids, min(k, len(centroids)), metric=faiss.METRIC_INNER_PRODUCT)


# --- k-means --------------------------------------------------------------------------------------------------


def _kmeans(emb, order, lang, caps, target, s, codes, cluster, info, has_embedding, pool) -> None:
    import faiss

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
    rows_with = np.arange(len(codes)) if has_embedding is None else np.flatnonzero(has_embedding)

    def label(a: int) -> None:  # every row with an embedding gets its cluster, eligible or not
        part = rows_with[a:a + ASSIGN_BATCH]
        cluster[part] = _nearest(km.centroids, unit_rows(emb, part), 1)[1][:, 0]

    pool.map(label, list(range(0, len(rows_with), ASSIGN_BATCH)))
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
