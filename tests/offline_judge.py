"""The quality bar off, for tests that need rows through the offline judge.

SmolLM2-135M, the only judge that ships offline, scores nearly every pair 1 of 5 (bench/judge.py, bench/qc.py),
so selection's default bar (min_quality 3) keeps nothing it judged. Tests that are about what comes after the
judge turn the bar off, as the demo does (examples/demo.toml); tests/test_select.py tests the bar itself.
"""

NO_QUALITY_BAR = {"min_quality": 0}
