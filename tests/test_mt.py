"""Seq2seq MT (synth/mt_models.py) on tiny models built here: a SentencePiece model trained on a few lines, M2M100 and
Marian configs with small dimensions and random weights. No translation model ships in a package, so these
check the plumbing (language codes, splitting, batching, joining, truncation flags, the stage around it) and
that garbage from such a model is caught; a hub name is passed through to transformers untouched."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synth.mt_models import (
    MTError,
    Seq2SeqTranslator,
    code_candidates,
    detect_family,
    lang_token,
)

EXAMPLES = Path(__file__).parents[1] / "examples"
HUB_NAME = "facebook/nllb-200-distilled-600M"


def _training_lines() -> list[str]:
    sw = (EXAMPLES / "corpus" / "sw" / "udhr_swahili.txt").read_text(encoding="utf-8")
    en = (EXAMPLES / "corpus" / "noise" / "udhr_english.txt").read_text(encoding="utf-8")
    return [line for line in (sw + "\n" + en).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("spm")
    (d / "train.txt").write_text("\n".join(_training_lines()), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(d / "train.txt"), model_prefix=str(d / "sp"), vocab_size=200,
                                   model_type="unigram", character_coverage=1.0, bos_id=-1, eos_id=-1,
                                   unk_id=0, pad_id=-1, minloglevel=2)
    return d / "sp.model"


def _spm_vocab(spm_path: Path, specials: list[str]) -> dict[str, int]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    vocab = {tok: i for i, tok in enumerate(specials)}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    return vocab


@pytest.fixture(scope="module")
def tiny_m2m100(tmp_path_factory, spm_model) -> Path:
    """An M2M100 model with 2-layer, 16-wide random weights and a real (tiny) SentencePiece tokenizer."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    d = tmp_path_factory.mktemp("m2m100")
    vocab = _spm_vocab(spm_model, ["<s>", "<pad>", "</s>", "<unk>"])
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = M2M100Tokenizer(str(d / "vocab.json"), str(spm_model), src_lang="sw", tgt_lang="en")
    n = max([len(tok), *tok.lang_token_to_id.values()]) + 16  # language and made-up tokens sit past the vocab
    config = M2M100Config(vocab_size=n, d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, max_position_embeddings=256, pad_token_id=1, bos_token_id=0,
                          eos_token_id=2, decoder_start_token_id=2)
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(config).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    return d / "model"


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory, spm_model) -> Path:
    """A Marian (opus-mt style, one language pair) model with random weights."""
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    d = tmp_path_factory.mktemp("marian")
    vocab = _spm_vocab(spm_model, ["</s>", "<unk>", "<pad>"])
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = MarianTokenizer(str(spm_model), str(spm_model), str(d / "vocab.json"))
    config = MarianConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, max_position_embeddings=256, pad_token_id=2, eos_token_id=0,
                          decoder_start_token_id=2, forced_eos_token_id=0)
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    return d / "model"


# ---------------------------------------------------------------------------------------------- language codes


def test_language_codes_for_each_family():
    assert code_candidates("sw")[:3] == ["swh", "swa", "sw"]
    assert "zh" in code_candidates("cmn") and "tl" in code_candidates("tgl")
    nllb = {"swh_Latn": 1, "eng_Latn": 2, "zho_Hans": 3, "amh_Ethi": 4}
    assert lang_token("nllb", nllb, "sw") == "swh_Latn"
    assert lang_token("nllb", nllb, "eng") == "eng_Latn"
    assert lang_token("nllb", nllb, "cmn") == "zho_Hans"  # Mandarin is zho_Hans in NLLB
    assert lang_token("nllb", nllb, "amh") == "amh_Ethi"
    assert lang_token("m2m100", {"__sw__": 1, "__en__": 2}, "swh") == "sw"
    assert lang_token("madlad", {"<2sw>": 1, "<2en>": 2}, "swh") == "<2sw>"
    assert lang_token("marian", {"hello": 1}, "swh") is None  # a pair model: no language tokens
    assert lang_token("marian", {">>swh<<": 1, ">>fra<<": 2}, "sw") == ">>swh<<"
    with pytest.raises(MTError, match="no language token for 'yor'.*yor_Latn"):
        lang_token("nllb", nllb, "yor")
    with pytest.raises(MTError, match="unknown MT family"):
        lang_token("fairseq", nllb, "sw")
    assert code_candidates("swc") == ["swc", "sw"]  # Congo Swahili falls back to a model's Swahili token


# ---------------------------------------------------------------------------------------------- tiny models


def test_tiny_m2m100_translates_in_pieces_with_language_tokens(tiny_m2m100):
    mt = Seq2SeqTranslator(str(tiny_m2m100), max_input_tokens=24, max_new_tokens=6, batch_size=3)
    assert mt.family == "m2m100"
    assert mt.lang_code("swh") == "sw"
    kw = mt.generate_kwargs("swh", "eng")
    assert kw["forced_bos_token_id"] == mt.tokenizer.convert_tokens_to_ids("__en__")
    assert mt.tokenizer.src_lang == "sw"
    sw = (EXAMPLES / "corpus" / "sw" / "udhr_swahili.txt").read_text(encoding="utf-8").split("\n\n")
    text = "\n\n".join(sw[1:4])
    [out, short] = mt.translate([text, "Kila mtu ana haki."], "swh", "eng")
    assert out.text.count("\n\n") == 2  # three paragraphs in, three out, however many pieces each became
    assert out.input_tokens > 24  # it was split: no piece was allowed more than 24 tokens
    # Random weights never say </s> within 6 tokens: every output is flagged as cut off, never passed as done.
    assert out.finish_reason == "length" and short.finish_reason == "length"
    with pytest.raises(MTError, match="no language token"):
        mt.translate(["x"], "swh", "yue")


@pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
def test_tiny_marian_pair_model(tiny_marian):
    mt = Seq2SeqTranslator(str(tiny_marian), max_new_tokens=5)
    assert mt.family == "marian"
    assert mt.lang_code("swh") is None and mt.generate_kwargs("swh", "eng") == {}
    [out] = mt.translate(["Kila mtu ana haki ya kuishi."], "swh", "eng")
    assert out.finish_reason == "length" and out.output_tokens <= 5


def test_family_detection_rejects_other_models():
    class Tok:
        def get_vocab(self):
            return {"a": 0}

    with pytest.raises(MTError, match="not a supported translation family"):
        detect_family("bert", Tok(), "some/model")
    assert detect_family("t5", type("T", (), {"get_vocab": lambda self: {"<2en>": 1}})(), "x") == "madlad"


def test_seq2seq_stage_drops_garbage_with_reasons(tiny_m2m100, tmp_path):
    """Stage 2 through the tiny model on real fragments: random weights give cut-off garbage, all dropped."""
    from synth.kernel import StageOutput
    from synth.orchestrate import RunSettings, run_stage_by_key
    from synth.stages.extract import ExtractSettings, extract
    from synth.stages.translate import Translate

    extract([str(EXAMPLES / "corpus")], tmp_path, ExtractSettings(lang="sw", fragments=4, min_len=150),
            progress=False)
    n_in = StageOutput.current(tmp_path, "01_extract").num_rows
    section = {"translator": "seq2seq", "mt_model": str(tiny_m2m100), "mt_max_input_tokens": 48, "mt_max_new_tokens": 8}
    out = run_stage_by_key(tmp_path, "02_translate", RunSettings(sections={"translate": section}), progress=False)
    stats = out.stats()
    assert stats["rows_in"] == n_in == 4
    assert stats["rows_out"] + sum(stats["dropped"].values()) == n_in
    assert out.num_rows == 0 and set(stats["dropped"]) <= {"truncated", "repetition", "empty_output"}
    assert stats["counters"]["mt_input_tokens"] > 0
    # The fingerprint names the MT model, not the LLM settings it does not use.
    params = Translate(translator="seq2seq", mt_model=str(tiny_m2m100)).params()
    assert params["mt_model"].startswith("model:") and "engine" not in params and "prompt" not in params
    assert "response_en" in out.read().column_names  # empty shards still carry the columns


def test_hub_name_is_passed_to_transformers(tmp_path):
    """A hub name is not rejected by synth: it goes to from_pretrained, and offline transformers' own error
    (chained, with the model's name added) is what comes back."""
    code = (
        "from synth.stages.translate import Translate\n"
        f"stage = Translate(translator='seq2seq', mt_model={HUB_NAME!r})\n"
        "print('PARAMS', stage.params()['mt_model'])\n"
        "try:\n"
        "    stage.setup()\n"
        "except Exception as e:\n"
        "    c = e.__cause__\n"
        "    print('ERROR', type(e).__name__, type(c).__module__, str(e).replace(chr(10), ' '))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout
    assert f"PARAMS {HUB_NAME}@main" in out, proc.stderr[-2000:]
    error = next(line for line in out.splitlines() if line.startswith("ERROR"))
    _, kind, cause_module, message = error.split(" ", 3)
    assert kind == "OSError" and cause_module.startswith(("transformers", "huggingface_hub", "builtins"))
    assert HUB_NAME in message and "offline" in message.lower()
