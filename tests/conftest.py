"""Pinned for every test, on any machine: one BLAS/OpenMP thread per process (float sums then add up in one
order, and the suite's worker processes do not fight over two cores). Greedy decoding and the dtype are pinned
by the tests themselves (``Sampling`` defaults to temperature 0; "auto" resolves to float32 on every CPU).
The ``requires`` marker applies tests/required.py's rule: a missing part skips locally and fails under CI."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(*parts): parts the test needs (tests/required.py): a missing "
                                       "one skips it locally and fails it under CI=true")


def pytest_runtest_setup(item):
    from required import require

    for mark in item.iter_markers("requires"):
        require(*mark.args)
