"""The bundled SFT trainer on SmolLM2-135M-Instruct (CPU): assistant-only loss, LoRA learning, multilingual
validation and checkpoint choice, and the trained model evaluated."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.train.sft import load_sft_dataset, make_trainer, train

# Short real sentences (UDHR Article 3 and 1, examples/lid_eval) as native answers; instructions in the language.
ROWS = {
    "swh": [("Andika sentensi kuhusu haki.", "Kila mtu ana haki ya kuishi, haki ya uhuru, na haki ya kulindwa."),
            ("Taja haki moja.", "Watu wote wamezaliwa huru, hadhi na haki zao ni sawa.")],
    "fra": [("Écris une phrase sur les droits.", "Tout individu a droit à la vie, à la liberté et à la sûreté."),
            ("Cite un droit.", "Tous les êtres humains naissent libres et égaux en dignité et en droits.")],
    "eng": [("Write a sentence about rights.", "Everyone has the right to life, liberty and security of person."),
            ("Name one right.", "All human beings are born free and equal in dignity and rights.")],
}


def export_dir(path: Path, langs: list[str]) -> Path:
    """A ``final/``-style folder: Parquet in the export schema with optional score and lineage columns."""
    rows = []
    for lang in langs:
        for i, (q, a) in enumerate(ROWS[lang]):
            rows.append({"id": f"{lang}-{i}", "lang": lang,
                         "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                         "instruction": q, "response": a, "quality": 4.5, "source_id": f"udhr-{lang}-{i}"})
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "part-00000.parquet")
    (path / "README.md").write_text("dataset card\n")
    return path


def test_load_reads_export_schema_and_keeps_languages(tmp_path):
    d = export_dir(tmp_path / "final", ["swh", "eng"])
    ds = load_sft_dataset(d, cache_dir=tmp_path / "c")
    assert len(ds) == 4 and set(ds["lang"]) == {"swh", "eng"}
    row = ds[0]
    assert row["prompt"] == [{"role": "user", "content": ROWS["swh"][0][0]}]
    assert row["completion"] == [{"role": "assistant", "content": ROWS["swh"][0][1]}]
    assert len(load_sft_dataset(d, langs=["sw"], cache_dir=tmp_path / "c")) == 2
    with pytest.raises(FileNotFoundError):
        load_sft_dataset(tmp_path / "missing")


@pytest.mark.requires("smollm2")
def test_loss_is_on_the_assistant_turn_only(tmp_path):
    d = export_dir(tmp_path / "final", ["swh"])
    trainer, info = make_trainer(d, "smollm2", tmp_path / "out", max_steps=1, batch_size=2)
    tok = info["tokenizer"]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for row in range(2):
        ids, labels = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
        learnt = [i for i, lab in zip(ids, labels, strict=True) if lab != -100]
        masked = [i for i, lab in zip(ids, labels, strict=True) if lab == -100]
        text = tok.decode(learnt)
        assert text.strip().startswith(tuple(a for _, a in ROWS["swh"]))
        assert "<|im_end|>" in text  # the end-of-turn token is learnt, so the model learns to stop
        prompt = tok.decode(masked)
        assert any(q in prompt for q, _ in ROWS["swh"])  # the user turn is there, masked
        assert "<|im_start|>user" in prompt and "<|im_start|>assistant" in prompt
        assert not any(q in text for q, _ in ROWS["swh"])
        # labels are -100 exactly up to the answer, then every real token is learnt
        first = labels.index(next(lab for lab in labels if lab != -100))
        assert all(lab == -100 for lab in labels[:first])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The bar: LoRA, max_steps=2, on an exported-style folder, validated in two languages.

    One batch holds the whole tiny set, so the loss logged at step 2 is on the same rows as at step 1, after one
    update.
    """
    from required import require

    require("smollm2")
    tmp = tmp_path_factory.mktemp("train")
    data = export_dir(tmp / "final", ["swh", "fra", "eng"])
    val = export_dir(tmp / "val", ["swh", "fra"])
    return train([data], "smollm2", tmp / "out", method="lora", lr=5e-3, max_steps=2, batch_size=6, eval_steps=1,
                 val_data=[val], logging_steps=1, max_len=128)


@pytest.mark.slow
def test_lora_two_steps_lower_the_loss_and_keep_the_best_multilingual_checkpoint(trained):
    rep = trained
    assert rep.steps == 2 and rep.train_rows == 6 and rep.train_langs == {"eng": 2, "fra": 2, "swh": 2}
    assert [s for s, _ in rep.train_loss] == [1, 2]
    assert rep.last_loss < rep.first_loss - 0.2, rep.train_loss  # LoRA learns the training rows
    assert rep.bf16 is False  # CPU: fp32
    assert rep.val_rows == {"fra": 2, "swh": 2}
    assert [h["step"] for h in rep.val_history] == [1, 2]
    for h in rep.val_history:
        assert set(h["per_lang"]) == {"fra", "swh"}
        assert h["multilingual"] == pytest.approx(sum(h["per_lang"].values()) / 2)
    best = min(rep.val_history, key=lambda h: h["multilingual"])
    assert rep.best_step == best["step"] and rep.best_val_loss == pytest.approx(best["multilingual"])
    assert rep.best_val_per_lang == best["per_lang"]
    assert rep.best_checkpoint.endswith(f"checkpoint-{rep.best_step}") and Path(rep.best_checkpoint).is_dir()
    assert (Path(rep.model_dir) / "config.json").exists()  # merged: loadable by any engine
    assert (Path(rep.adapter_dir) / "adapter_config.json").exists()
    saved = json.loads((Path(rep.out) / "train_report.json").read_text())
    assert saved["best_val_per_lang"] == rep.best_val_per_lang and saved["versions"]["trl"]


@pytest.mark.slow
def test_trained_model_evaluates(trained, tmp_path):
    """The merged model loads and evaluates, and its numbers are those of its saved outputs: every value the
    metric code can recompute from items.jsonl (language verdicts, chrF++ per direction) is the one in the table
    (test_eval.py shows the same metrics give 100 or 1 on known-right outputs and less on wrong ones)."""
    from test_eval import assert_table_recomputes

    from synth.eval import evaluate

    res = evaluate(trained.model_dir, tasks=["response_lang", "translation"], langs=["swh", "fra"],
                   out_dir=tmp_path / "eval", limit=1, max_new_tokens=8)
    rows = assert_table_recomputes(tmp_path / "eval")
    assert set(rows) == {"eng", "fra", "swh"}
    assert all("lang_correct" in rows[lang] and "code_switch" in rows[lang] for lang in ("fra", "swh"))
    assert res["model"] == trained.model_dir and res["counts"]["swh"]["response_lang"] == 1
    assert res["counts"]["swh"]["translation_into"] == 1 and res["counts"]["eng"]["translation_into"] == 2
    items = [json.loads(x) for x in (tmp_path / "eval" / "items.jsonl").read_text().splitlines()]
    assert len(items) == 2 + 4 and all(isinstance(i["output"], str) for i in items)


def test_lr_sweep_chooses_the_lr_with_the_lowest_multilingual_validation_loss(tmp_path, monkeypatch):
    import synth.train.sft as sft

    losses = {1e-4: {"swh": 2.0, "yor": 3.0}, 3e-4: {"swh": 2.2, "yor": 2.2}, 1e-3: {"swh": 1.5, "yor": 4.0}}
    calls = []

    def fake_train(data, model, out, lr, val_data, merge, **kw):
        calls.append((lr, out, kw))
        per = losses[lr]
        return sft.TrainReport(model=model, method="lora", out=str(out), model_dir=None, adapter_dir=str(out),
                               lr=lr, bf16=False, train_rows=1, train_langs={}, val_rows={}, steps=1,
                               best_step=1, best_val_loss=sum(per.values()) / 2, best_val_per_lang=per)

    monkeypatch.setattr(sft, "train", fake_train)
    rep = sft.lr_sweep([1e-4, 3e-4, 1e-3], "data", "smollm2", tmp_path, val_data=["val"], max_steps=3)
    assert rep.best_lr == 3e-4  # 2.2 mean beats 2.5 and 2.75, though 1e-3 has the best Swahili loss
    assert [c[0] for c in calls] == [1e-4, 3e-4, 1e-3] and all(c[2] == {"max_steps": 3} for c in calls)
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["best_lr"] == 3e-4 and saved["runs"][2]["best_val_per_lang"] == {"swh": 1.5, "yor": 4.0}
    with pytest.raises(ValueError, match="val_data"):
        sft.lr_sweep([1e-4], "data", "smollm2", tmp_path, val_data=None)
