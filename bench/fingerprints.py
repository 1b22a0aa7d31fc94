"""The fingerprint of every stage the registry builds from a run's settings, for one fixed input: run it from two
checkouts and compare, to show that a change of code layout renames no output (a killed run resumes across it).

    .venv/bin/python bench/fingerprints.py [--tree PATH] [--config run.toml]

``--tree`` imports synth from another checkout (say a ``git worktree`` of an older commit; link its ``.cache`` to
this one's so both see the same offline models). Stages made by a driver or their own ``from_settings`` (extract,
select, the fidelity gate) are left out: their fingerprints hash their settings and an algorithm version directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _plain(spec, stage_base: type) -> bool:
    """Made by calling its class with its settings: no driver, no builder (older checkouts) and no
    ``from_settings`` of its own."""
    if spec.driver is not None or getattr(spec, "build", None) is not None:
        return False
    made = getattr(spec.stage_class, "from_settings", None)
    return made is None or made.__func__ is stage_base.from_settings.__func__


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", help="a synth checkout to import instead of this one")
    ap.add_argument("--config", help="a run.toml (default: Spanish through Apertium, default models)")
    args = ap.parse_args()
    sys.path[0] = args.tree or str(Path(__file__).resolve().parent.parent)  # not bench/: its select.py is a stdlib name
    import synth
    from synth.pipeline import PIPELINE

    try:
        from synth.orchestrate import RunSettings
    except ImportError:  # a checkout from before synth.orchestrate
        from synth.pipeline import RunSettings
    settings = (RunSettings.load(args.config) if args.config else
                RunSettings.from_dict({"lang": "es", "inputs": ["examples/corpus_es"],
                                       "translate": {"translator": "apertium"},
                                       "backtranslate": {"translator": "apertium"}}))
    out = {}
    for spec in PIPELINE.runnable:
        if _plain(spec, synth.Stage):
            out[spec.key] = spec.stage_class(**settings.values(spec)).fingerprint("input0")
    print(f"# synth from {synth.__file__}", file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
