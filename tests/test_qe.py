"""Learned translation QE (synth.translate.qe) and its fidelity check in stage 5.

The model here is a tiny MT5 with random weights, built from a config and saved with a byte-level tokenizer, so
these tests prove the plumbing, not the quality: the scorer loads a MetricX-style directory offline, feeds it
MetricX's QE input, reads the logit MetricX reads (id 250089 at decoder step 0, clipped to [0, 25]), and stage 5
stores it as ``bt_qe`` for the gate's ``qe_threshold``. Whether a real MetricX-24 model judges translations well
is its authors' claim, not something a random model can show.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from synth.kernel import TableSource
from synth.runner import run_stage
from synth.stages.backtranslate import (
    FIDELITY_REASONS,
    Backtranslate,
    Fidelity,
    FidelityThresholds,
    fidelity_reason,
)
from synth.translate.qe import METRICX_SCORE_ID, QEError, QEScorer

PAIRS = [("Write a short poem about the sea.", "Escribe un poema corto sobre el mar."),
         ("List three freedoms that the declaration protects.", "Lista tres libertades que la declaración protege."),
         ("Explain why everyone has the right to education.", "Explica por qué todos tienen derecho a la educación."),
         ("The red car.", "El coche rojo."),
         ("Hello", "Hola")]
INSTRUCTIONS = ["Explain in two sentences why everyone has the right to education.",
                "Write a short letter to a friend about the right to rest and leisure.",
                "List three freedoms that the declaration protects.",
                "Describe the sea at night.",
                "Name two rivers of Spain and say which one is longer."]


def _tokenizer():
    """A byte-level tokenizer (every byte its own token: no training, no download) that ends each text with
    </s> as mT5's does, as transformers saves it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _direct(model, tokenizer, source: str, translation: str, max_length: int | None = None) -> float:
    """MetricX's score of one pair computed here as MetricX does, straight from the model: tokenized with </s>,
    which is then cut off; no batching, padding or sorting."""
    import torch

    ids = tokenizer(f"source: {source} candidate: {translation}", truncation=max_length is not None,
                    max_length=max_length, return_tensors="pt")["input_ids"]
    assert ids[0, -1] == tokenizer.eos_token_id
    ids = ids[:, :-1]
    with torch.no_grad():
        logits = model(input_ids=ids, decoder_input_ids=torch.zeros((1, 1), dtype=torch.long)).logits
    return float(logits[0, 0, METRICX_SCORE_ID].clamp(0, 25))


@pytest.fixture(scope="module")
def metricx(tmp_path_factory):
    """A directory holding a tiny MT5 (vocabulary past id 250089, one layer, d_model 8) and its tokenizer. The
    score row of the output layer is scaled so that scores land near 10, inside MetricX's [0, 25], not clipped."""
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration

    torch.manual_seed(0)
    config = MT5Config(vocab_size=250112, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_decoder_layers=1,
                       num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = MT5ForConditionalGeneration(config).eval()
    tokenizer = _tokenizer()
    with torch.no_grad():
        probe = model(input_ids=tokenizer("source: a candidate: b", return_tensors="pt")["input_ids"][:, :-1],
                      decoder_input_ids=torch.zeros((1, 1), dtype=torch.long)).logits[0, 0, METRICX_SCORE_ID]
        model.lm_head.weight[METRICX_SCORE_ID] *= 10.0 / float(probe)
    path = tmp_path_factory.mktemp("metricx-tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


def test_the_scorer_reads_metricx_s_logit(metricx):
    path, model, tokenizer = metricx
    scorer = QEScorer(str(path), batch_size=2)
    assert scorer.kind == "metricx" and scorer.higher_is_better is False
    pairs = [*PAIRS[:3], ("", "Hola"), (PAIRS[3][0], "  "), *PAIRS[3:]]
    scores = scorer.score(pairs)
    assert len(scores) == len(pairs)
    assert scores[3] is None and scores[4] is None  # an empty side: no score, no error
    got = [s for s in scores if s is not None]
    assert all(isinstance(s, float) and 0.0 <= s <= 25.0 for s in got)
    assert 0.0 < min(got) < max(got) < 25.0  # spread, not clipped: the threshold test needs both sides
    want = [_direct(model, tokenizer, s, t) for s, t in PAIRS]
    assert got == pytest.approx(want, abs=1e-4)  # batched, padded, length-sorted: the same as one by one
    assert scorer.score(pairs) == scores  # deterministic
    assert QEScorer(str(path), batch_size=4).score(pairs) == pytest.approx(scores, abs=1e-4)  # other padding
    assert scorer.score([("", "")]) == [None]
    head = scorer._model.lm_head.weight.data
    head[METRICX_SCORE_ID] *= 10.0  # scores near 100: clipped to MetricX's range
    assert scorer.score(PAIRS) == [25.0] * len(PAIRS)
    head[METRICX_SCORE_ID] *= -1.0
    assert scorer.score(PAIRS) == [0.0] * len(PAIRS)
    cut = QEScorer(str(path), max_input_tokens=12).score(PAIRS[:1])  # truncated as MetricX truncates
    assert cut == pytest.approx([_direct(model, tokenizer, *PAIRS[0], max_length=12)], abs=1e-4)
    assert cut != pytest.approx(scores[:1], abs=1e-4)


def test_its_identity_names_the_model_by_content(metricx, tmp_path):
    path, _, _ = metricx
    ident = QEScorer(str(path)).identity()
    assert ident["kind"] == "metricx" and ident["score_id"] == METRICX_SCORE_ID
    assert ident == QEScorer(str(path), batch_size=64).identity()  # the batch size names nothing
    assert ident["model"].startswith(f"{path.name}:")
    assert QEScorer("google/metricx-24-hybrid-large-v2p6", tokenizer="google/mt5-xl").identity()["tokenizer"] \
        == "google/mt5-xl@main"


def test_kinds_are_told_apart_and_comet_is_refused_with_its_reason(metricx, tmp_path):
    with pytest.raises(QEError, match="kind"):
        QEScorer("some/model")
    with pytest.raises(QEError, match="kind must be"):
        QEScorer(str(metricx[0]), kind="bleu")
    assert QEScorer("google/metricx-24-hybrid-xl-v2p6").kind == "metricx"
    assert QEScorer(str(metricx[0])).higher_is_better is False  # an error score
    with pytest.raises(QEError, match="unbabel-comet, pins numpy < 2"):
        QEScorer("Unbabel/wmt22-cometkiwi-da")
    (tmp_path / "kiwi" / "checkpoints").mkdir(parents=True)
    (tmp_path / "kiwi" / "checkpoints" / "model.ckpt").write_bytes(b"")
    with pytest.raises(QEError, match="CometKiwi"):
        QEScorer(str(tmp_path / "kiwi"))


def test_the_gate_reads_the_threshold_in_the_row_s_direction():
    base = {"lang": "spa", "bt_lid_label": "spa", "bt_lid_score": 0.99, "bt_script_ok": True,
            "bt_length_ratio": 1.1, "bt_numbers_ok": True, "bt_entities_ok": True, "bt_roundtrip": None,
            "bt_roundtrip_sim": None}
    error, quality = {"bt_qe_higher_is_better": False}, {"bt_qe_higher_is_better": True}
    th = FidelityThresholds(qe_threshold={"es": 5.0, "*": 0.5})
    assert th.qe_threshold == {"spa": 5.0, "*": 0.5}  # any spelling of the language
    assert fidelity_reason({**base, **error, "bt_qe": 6.0}, th) == "qe_low"  # MetricX: an error score
    assert fidelity_reason({**base, **error, "bt_qe": 4.0}, th) is None
    assert fidelity_reason({**base, **quality, "bt_qe": 6.0}, th) is None  # a higher-is-better score
    assert fidelity_reason({**base, **quality, "bt_qe": 4.0}, th) == "qe_low"
    assert fidelity_reason({**base, **quality, "bt_qe": 0.4, "lang": "cat", "bt_lid_label": "cat"}, th) == "qe_low"
    assert fidelity_reason({**base, "bt_qe": None, "bt_qe_higher_is_better": None}, th) is None  # not scored
    assert fidelity_reason({**base, **error, "bt_qe": 24.0}, FidelityThresholds()) is None  # off by default
    assert fidelity_reason({**base, **error, "bt_qe": 6.0}, FidelityThresholds(qe_threshold={"deu": 1.0})) is None
    assert "qe_low" in FIDELITY_REASONS


def test_the_qe_model_is_in_the_fingerprint_only_when_set(metricx):
    path, _, _ = metricx
    plain = Backtranslate(translator="apertium", lang="spa")
    assert not any(k.startswith("qe_") for k in plain.params())
    assert plain.fingerprint("x") == Backtranslate(translator="apertium", lang="spa", qe_kind="metricx",
                                                   qe_batch_size=3).fingerprint("x")
    scored = Backtranslate(translator="apertium", lang="spa", qe_model=str(path))
    assert scored.params()["qe_model"] == QEScorer(str(path)).identity()
    assert scored.fingerprint("x") != plain.fingerprint("x")
    assert scored.fingerprint("x") == Backtranslate(translator="apertium", lang="spa", qe_model=str(path),
                                                    qe_batch_size=1).fingerprint("x")


def test_with_a_qe_model_a_cpu_translator_s_copy_takes_a_gpu(metricx, fake_gpus, no_cuda):
    """Apertium needs no GPU, so its stage runs in the driver; the QE model would put CUDA there. With one,
    the stage asks a GPU per copy (the executor runs it pinned in a process of its own); on a CPU it still runs
    in the driver, on the CPU."""
    from synth.devices import local_groups

    path, _, _ = metricx
    assert Backtranslate(translator="apertium").placement() is None
    fake_gpus("NVIDIA H100 80GB HBM3:9.0")
    placement = Backtranslate(translator="apertium", qe_model=str(path)).placement()
    assert placement.per_copy == 1 and local_groups(placement) == [["0"]]
    assert QEScorer(str(path))._device() == "cuda:0"
    fake_gpus("")
    assert local_groups(placement) == [[]] and QEScorer(str(path))._device() == "cpu"


@pytest.mark.requires("apertium")
def test_stage_5_fills_bt_qe_and_the_gate_drops_low_quality_rows(metricx, tmp_path):
    path, model, tokenizer = metricx
    n = len(INSTRUCTIONS)
    rows = pa.table({"id": [f"r{i}" for i in range(n)], "lang": ["spa"] * n, "fragment": ["x"] * n,
                     "instruction_en": INSTRUCTIONS, "selected": [True] * n})
    bt = run_stage(Backtranslate(translator="apertium", qe_model=str(path), qe_batch_size=2), TableSource(rows),
                   tmp_path, progress=False).read()
    assert bt.num_rows == n and bt.schema.field("bt_qe").type == pa.float32()
    got = bt.to_pylist()
    assert all(r["bt_qe_higher_is_better"] is False for r in got)
    for r in got:  # the English instruction is the source, its Spanish back-translation the candidate
        assert r["bt_qe"] == pytest.approx(_direct(model, tokenizer, r["instruction_en"], r["instruction"]), abs=1e-4)
    scores = sorted(r["bt_qe"] for r in got)
    assert scores[0] < scores[-1]
    threshold = (scores[n // 2 - 1] + scores[n // 2]) / 2  # some rows on each side
    worse = {r["id"] for r in got if r["bt_qe"] > threshold}
    assert 0 < len(worse) < n

    def gated(thresholds: FidelityThresholds) -> tuple[set[str], dict[str, int]]:
        gate = Fidelity(thresholds=thresholds)
        gate._input_schema = bt.schema
        out = run_stage(gate, TableSource(bt), tmp_path, progress=False)
        return set(out.read().column("id").to_pylist()), out.stats()["dropped"]

    before, dropped = gated(FidelityThresholds())  # the model-free checks alone
    after, dropped_qe = gated(FidelityThresholds(qe_threshold={"es": threshold}))
    assert after == before - worse and after < before
    assert dropped_qe.pop("qe_low") == len(before & worse) and dropped_qe == dropped

    plain = run_stage(Backtranslate(translator="apertium"), TableSource(rows), tmp_path, progress=False).read()
    assert plain.column("bt_qe").null_count == n  # no QE model: the column is there, null
    assert plain.drop_columns(["bt_qe", "bt_qe_higher_is_better"]).equals(
        bt.drop_columns(["bt_qe", "bt_qe_higher_is_better"]))


@pytest.mark.requires("gpu")
def test_on_a_gpu_the_scores_match_the_cpu_s(metricx):
    path, _, _ = metricx
    on_gpu = QEScorer(str(path))
    assert on_gpu._device() == "cuda:0"
    assert on_gpu.score(PAIRS) == pytest.approx(QEScorer(str(path), device="cpu").score(PAIRS), abs=1e-3)
    assert str(on_gpu._model.device) == "cuda:0"
