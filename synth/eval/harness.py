"""lm-evaluation-harness from ``synth eval --harness``: its public tasks by name, and synth's local JSONL files as
harness tasks, so a user compares a synth-trained model on the numbers the community reports.

``local`` stands for the local files of ``data_dir`` as harness tasks: ``synth_mc_<lang>`` (``mc.jsonl``,
log-likelihood of each choice after the question, as synth's own ``mc`` task scores it: ``acc``) and
``synth_translation_<src>_<tgt>`` (``translation.jsonl``, greedy generation to the first newline: ``chrf``,
``bleu``). The task configs and their per-language rows are written to ``OUT/harness_tasks/``, so a run can be
repeated with ``lm_eval --include_path``. Public tasks (``belebele_swh_Latn``, ``global_mmlu_sw``, ``xlsum_*``…)
read their datasets from the Hugging Face hub, or from its cache when offline.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from synth.eval.tasks import EXAMPLES, load_jsonl
from synth.io import atomic_write_text
from synth.lang import name as language_name

LOCAL = "local"
METRICS = {"multiple_choice": [("acc", True)], "generate_until": [("chrf", True), ("bleu", True)]}


def _write_task(folder: Path, task: str, rows: list[dict[str, Any]], spec: dict[str, Any]) -> None:
    """One harness task: its rows as JSONL and a YAML config reading them (JSON is YAML, so no YAML writer)."""
    data = folder / f"{task}.jsonl"
    atomic_write_text(data, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    metrics = [{"metric": m, "aggregation": m if m in ("chrf", "bleu") else "mean", "higher_is_better": h}
               for m, h in METRICS[spec["output_type"]]]
    config = {"task": task, "tag": ["synth_local"], "dataset_path": "json",
              "dataset_kwargs": {"data_files": {"test": str(data.resolve())}}, "test_split": "test",
              "metric_list": metrics, "metadata": {"version": 1.0}, **spec}
    atomic_write_text(folder / f"{task}.yaml", json.dumps(config, ensure_ascii=False, indent=1) + "\n")


def local_tasks(data_dir: str | Path, folder: str | Path, langs: set[str] | None = None) -> list[str]:
    """Write synth's local ``mc.jsonl`` and ``translation.jsonl`` as harness tasks into ``folder``; their names."""
    data_dir, folder = Path(data_dir), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    if (data_dir / "mc.jsonl").is_file():
        by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for rec in load_jsonl(data_dir / "mc.jsonl"):
            by_lang[rec["lang"]].append(rec)
        for lang, rows in sorted(by_lang.items()):
            if langs and lang not in langs:
                continue
            task = f"synth_mc_{lang}"
            _write_task(folder, task, rows, {"output_type": "multiple_choice", "doc_to_text": "{{question}}",
                                             "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}",
                                             "target_delimiter": ""})
            names.append(task)
    if (data_dir / "translation.jsonl").is_file():
        by_pair: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for rec in load_jsonl(data_dir / "translation.jsonl"):
            by_pair[rec["src_lang"], rec["tgt_lang"]].append(rec)
        for (src, tgt), rows in sorted(by_pair.items()):
            if langs and not {src, tgt} <= langs | {"eng"}:
                continue
            task = f"synth_translation_{src}_{tgt}"
            s, t = language_name(src), language_name(tgt)
            _write_task(folder, task, rows, {
                "output_type": "generate_until", "doc_to_text": f"Translate this {s} text into {t}.\n\n{{{{src}}}}",
                "doc_to_target": "{{tgt}}", "target_delimiter": "",
                "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": 256}})
            names.append(task)
    return names


def run_harness(model_path: str, names: list[str], out_dir: str | Path, data_dir: str | Path | None = None,
                langs: set[str] | None = None, limit: int | None = None, batch_size: int = 8) -> dict[str, Any]:
    """Run harness tasks (``local`` expands to synth's local files) on a transformers model; write
    ``OUT/harness.json`` with the harness's own results. Returns ``{"tasks": {task: {metric: value}}, …}``."""
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    out_dir = Path(out_dir)
    folder = out_dir / "harness_tasks"
    tasks = [n for n in names if n != LOCAL]
    if LOCAL in names:
        data_dir = Path(data_dir) if data_dir else EXAMPLES
        local = local_tasks(data_dir, folder, langs)
        if not local:
            raise ValueError(f"--harness local: {data_dir} has no mc.jsonl or translation.jsonl for these languages")
        tasks = local + tasks
    manager = TaskManager(include_path=str(folder) if folder.is_dir() else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"lm-evaluation-harness has no task {', '.join(unknown)} (`lm_eval ls tasks` lists them)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "auto" if device == "cuda" else "float32"  # a CPU computes bf16 weights slowly and less exactly
    results = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": model_path, "dtype": dtype},
                                      tasks=tasks, task_manager=manager, device=device, batch_size=batch_size,
                                      limit=limit, apply_chat_template=True, log_samples=False)
    table = {task: {m.split(",")[0]: v for m, v in scores.items() if isinstance(v, int | float) and
                    "_stderr" not in m and m not in ("alias", "sample_len")}
             for task, scores in results["results"].items()}
    stderr = {task: {m.split(",")[0].replace("_stderr", ""): v for m, v in scores.items()
                     if "_stderr" in m and isinstance(v, int | float)}
              for task, scores in results["results"].items()}
    summary = {"model": model_path, "tasks": table, "stderr": stderr, "n_samples": results.get("n-samples", {}),
               "versions": {k: v for k, v in results.get("versions", {}).items() if k in table},
               "lm_eval": lm_eval.__version__, "device": device, "limit": limit}
    atomic_write_text(out_dir / "harness.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary
