"""Neighbour search for the selection (FAISS): which earlier rows, in priority order, are at cosine >= tau of each
row, and the threads it runs on.

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

from synth.select.settings import SelectSettings

AUTO_FLAT_MAX = 10_000  # index="auto": exact (one cell) up to this many eligible rows, IVF cells above
CELL_SIZE = 64  # IVF: eligible rows per leaf cell (nlist = rows / CELL_SIZE unless given)
TOP_PROBE = 4  # IVF: top cells whose leaves are searched when assigning a row
TRAIN_PER_CELL = 16  # IVF: k-means training sample per leaf cell
KMEANS_NITER = 10
ASSIGN_BATCH = 65_536
QUERY_CHUNK = 4096  # queries per range search (bounds the similarity block in memory)
DB_CHUNK = 262_144  # rows per range search index (bounds the copy; only flat on many rows needs several)
MATCHES_PER_CELL = 64  # earlier matches kept per row and cell (the best-ranked)


class Pool:
    """Threads that each run FAISS single-threaded, working on different cells at once. (FAISS's own OpenMP
    threads on many small products waste most of their time waiting, badly so on a loaded machine.)"""

    def __init__(self, threads: int | None) -> None:
        affinity = getattr(os, "sched_getaffinity", None)
        self.threads = max(1, threads or (len(affinity(0)) if affinity else os.cpu_count() or 1))

    def __enter__(self) -> Pool:
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


def unit_matrix(emb: np.ndarray, rows: np.ndarray, pool: Pool) -> np.ndarray:
    """``unit_rows(emb, rows)`` for many rows, filled in parallel chunks (one float32 copy, no temporaries)."""
    import faiss

    x = np.empty((len(rows), emb.shape[1]), dtype=np.float32)

    def fill(a: int) -> None:
        x[a:a + ASSIGN_BATCH] = emb[rows[a:a + ASSIGN_BATCH]]
        faiss.normalize_L2(x[a:a + ASSIGN_BATCH])

    pool.map(fill, list(range(0, len(rows), ASSIGN_BATCH)))
    return x


def unit_rows(emb: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``emb[rows]`` as contiguous float32, L2-normalised (inner product = cosine); zero rows stay zero."""
    import faiss

    x = np.ascontiguousarray(emb[rows], dtype=np.float32)
    faiss.normalize_L2(x)
    return x


class Join:
    """Pairs (later row, earlier row) with cosine >= tau, found with FAISS cell by cell.

    ``flat``: one cell holding every row, so every pair is compared (exact). ``ivf``: rows are assigned to the
    cells of a two-level k-means quantizer (``nlist`` leaves under about sqrt(nlist) top cells, trained on a
    sample); a row is compared with the earlier rows whose nearest cell is among its ``nprobe`` nearest cells.
    Each cell is one FAISS range search (BLAS) of all the rows probing it against the rows it holds. At most
    ``MATCHES_PER_CELL`` earlier matches are kept per row and cell (the best-ranked ones)."""

    def __init__(self, emb: np.ndarray, order: np.ndarray, s: SelectSettings, info: dict[str, Any],
                 pool: Pool) -> None:
        import faiss

        self.faiss, self.pool, self.tau = faiss, pool, s.tau
        n = len(order)
        t0 = time.perf_counter()
        self.x = unit_matrix(emb, order, pool)  # by position in the priority order
        kind = s.index if s.index != "auto" else ("flat" if n <= AUTO_FLAT_MAX else "ivf")
        self.info: dict[str, Any] = {"index": kind, "t_matrix": time.perf_counter() - t0}
        self.cells: Cells | None = None
        if kind == "ivf" and n > 1:
            t0 = time.perf_counter()
            nlist = s.nlist or max(1, round(n / CELL_SIZE))
            self.cells = Cells(self.x, min(nlist, n), s.nprobe, s.seed, pool)
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
            lims, dist, idx = index.range_search(xq, radius(self.tau))
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


def radius(tau: float) -> float:
    # FAISS range search keeps inner products strictly above the radius; take a hair less, then filter >= tau
    return float(np.nextafter(np.float32(tau), np.float32(-2)))


class Cells:
    """Two-level k-means cells (FAISS): ``top`` centroids, each owning a group of ``leaf`` centroids. A row goes
    to its nearest leaves among those of its ``TOP_PROBE`` nearest top cells: about (top + TOP_PROBE x leaves
    per top) products per row instead of ``nlist``."""

    def __init__(self, x: np.ndarray, nlist: int, nprobe: int, seed: int, pool: Pool) -> None:
        rng = np.random.default_rng(seed)
        n = len(x)
        sample = x[np.sort(rng.choice(n, size=min(n, nlist * TRAIN_PER_CELL), replace=False))]
        nlist = min(nlist, len(sample))
        ntop = max(1, min(nlist, round(math.sqrt(TOP_PROBE * nlist))))
        top = kmeans_centroids(sample, ntop, seed)
        _, lab = nearest(top, sample, 1)
        lab = lab[:, 0]
        sizes = np.bincount(lab, minlength=len(top))
        share = np.maximum(1, np.minimum(sizes, np.round(sizes / max(1, sizes.sum()) * nlist).astype(np.int64)))
        groups = [t for t in range(len(top)) if sizes[t]]
        trained = pool.map(lambda t: kmeans_centroids(sample[lab == t], int(share[t]), seed + 1 + t), groups)
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

        _, tops = nearest(self.top, x, self.top_probe)
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


def kmeans_centroids(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    import faiss

    k = max(1, min(k, len(x)))
    if k == len(x):
        return x.copy()
    km = faiss.Kmeans(x.shape[1], k, niter=KMEANS_NITER, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(TRAIN_PER_CELL, 64))
    km.train(x)
    return km.centroids


def nearest(centroids: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    return faiss.knn(x, centroids, min(k, len(centroids)), metric=faiss.METRIC_INNER_PRODUCT)
