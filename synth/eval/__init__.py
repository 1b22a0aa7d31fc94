"""Multilingual evaluation: response language, summarization, translation, multiple choice and LLM judges.

``evaluate(model, tasks, langs, data_dir, engine, out_dir)`` runs the tasks over local JSONL files whose
schemas are described in ``synth/eval/README.md`` and writes a language x metric table (JSON) and an HTML page
with a heatmap.
"""

from synth.eval.tasks import TASKS, evaluate, load_jsonl, loglikelihoods, score_mc

__all__ = ["TASKS", "evaluate", "load_jsonl", "loglikelihoods", "score_mc"]
