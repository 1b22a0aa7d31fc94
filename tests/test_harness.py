"""`synth eval --harness`: synth's local eval files as lm-evaluation-harness tasks, run by the harness itself on the
offline SmolLM2, and its numbers checked against synth's own scoring of the same items."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from synth.cli import app
from synth.eval import evaluate
from synth.eval.harness import local_tasks, run_harness

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "eval"


def test_local_files_become_one_harness_task_per_language_and_pair(tmp_path):
    names = local_tasks(EXAMPLES, tmp_path, langs={"eng", "swh", "spa"})
    assert names == ["synth_mc_eng", "synth_mc_spa", "synth_translation_eng_swh", "synth_translation_swh_eng"]
    config = yaml.safe_load((tmp_path / "synth_translation_eng_swh.yaml").read_text())
    assert config["output_type"] == "generate_until" and [m["metric"] for m in config["metric_list"]] == ["chrf",
                                                                                                         "bleu"]
    rows = [json.loads(line) for line in Path(config["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    assert len(rows) == 5 and {(r["src_lang"], r["tgt_lang"]) for r in rows} == {("eng", "swh")}
    assert "English" in config["doc_to_text"] and "Swahili" in config["doc_to_text"]


def test_an_unknown_harness_task_is_named(tmp_path):
    with pytest.raises(ValueError, match="no task no_such_task"):
        run_harness("unused", ["no_such_task"], tmp_path)


@pytest.mark.slow
def test_harness_multiple_choice_agrees_with_synths_own_scoring(tmp_path):
    """The same items, the same model, the same chat-formatted cloze: the harness's accuracy per language is synth's
    own mc_acc (the harness computes it; synth keeps its own only for engines the harness does not drive)."""
    from synth.models import resolve_model

    langs = {"fra", "deu", "spa"}
    res = run_harness(resolve_model("smollm2"), ["local"], tmp_path / "h", langs=langs)
    ours = evaluate("smollm2", tasks=["mc"], langs=sorted(langs), out_dir=tmp_path / "own")
    harness = {task.removeprefix("synth_mc_"): s["acc"] for task, s in res["tasks"].items() if "_mc_" in task}
    assert harness == pytest.approx({lang: row["mc_acc"] for lang, row in ours["table"].items()})
    chrf = res["tasks"]["synth_translation_eng_fra"]["chrf"]
    assert 0 < chrf < 100 and res["n_samples"]["synth_translation_eng_fra"]["effective"] == 5
    saved = json.loads((tmp_path / "h" / "harness.json").read_text())
    assert saved["tasks"] == res["tasks"] and saved["device"] == "cpu"


@pytest.mark.slow
def test_eval_harness_from_the_command_line(tmp_path):
    res = CliRunner().invoke(app, ["eval", "smollm2", "--out", str(tmp_path), "--harness", "local", "--langs", "spa",
                                   "--limit", "1"])
    assert res.exit_code == 0, res.output
    assert "synth_mc_spa" in res.output and "lm-evaluation-harness" in res.output
    saved = json.loads((tmp_path / "harness.json").read_text())
    assert list(saved["tasks"]) == ["synth_mc_spa"] and saved["limit"] == 1
    assert not (tmp_path / "table.json").exists()  # --harness without --tasks: only the harness ran
