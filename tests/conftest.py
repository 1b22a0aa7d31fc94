"""Pinned for every test, on any machine: one BLAS/OpenMP thread per process (float sums then add up in one
order, and the suite's worker processes do not fight over two cores). Greedy decoding and the dtype are pinned
by the tests themselves (``Sampling`` defaults to temperature 0; "auto" resolves to float32 on every CPU)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
