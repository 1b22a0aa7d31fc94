"""Evaluation: each metric against its library's own value, log-likelihood MC against a manual forward pass,
judges (parse failures, both-orders pairwise), the report, the sample files, and a small end-to-end run."""

import json
import time
from pathlib import Path

import pytest
import sacrebleu
import sacrebleu.utils as sacrebleu_utils
from rouge_score import rouge_scorer

from synth.eval import evaluate, load_jsonl, loglikelihoods, score_mc
from synth.eval import judge as J
from synth.eval import metrics as M
from synth.eval.report import colour, render_html
from synth.extract.lid import load_identifier
from synth.llm.base import Engine
from synth.llm.request import Request, Result, finish
from synth.text import clauses

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "eval"


# ------------------------------------------------------------------------------------------------ metrics


def test_script_tokenizer_keeps_every_script():
    tok = M.ScriptTokenizer()
    assert tok.tokenize("Hello, World! 42") == ["hello", "world", "42"]
    assert tok.tokenize("सभी मनुष्यों को") == ["सभी", "मनुष्यों", "को"]  # matras and viramas stay in the word
    assert tok.tokenize("人人生而自由。") == ["人", "人", "生", "而", "自", "由"]
    assert tok.tokenize("እያንዳንዱ፡ሰው") == ["እያንዳንዱ", "ሰው"]  # Ethiopic wordspace separates words
    assert tok.tokenize("Ẹnì kọ̀ọ̀kan") == ["ẹnì", "kọ̀ọ̀kan"]


def test_rouge_equals_rouge_score_with_the_same_tokenizer():
    preds = ["सभी मनुष्यों को गौरव और अधिकार", "Everyone has the right to education.", "人人有权受教育。"]
    refs = ["सभी मनुष्यों को गौरव और अधिकारों के मामले में", "Everyone has a right to education.", "人人都有受教育的权利。"]
    ours = M.rouge(preds, refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=M.ScriptTokenizer())
    for t in ("rouge1", "rouge2", "rougeL"):
        ref_value = 100 * sum(scorer.score(r, p)[t].fmeasure for p, r in zip(preds, refs, strict=True)) / 3
        assert ours[t] == pytest.approx(ref_value)
    # rouge-score's default tokenizer drops non-ASCII text: Hindi would score 0
    default = rouge_scorer.RougeScorer(["rouge1"])
    assert default.score(refs[0], preds[0])["rouge1"].fmeasure == 0.0
    assert M.rouge(preds[:1], refs[:1])["rouge1"] > 50


def test_chrf_pp_equals_sacrebleu():
    hyps = ["Watu wote wamezaliwa huru.", "Tous les êtres humains naissent libres."]
    refs = ["Watu wote wamezaliwa huru, hadhi na haki zao ni sawa.", "Tous les êtres humains naissent libres et égaux."]
    assert M.chrf_pp(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)


def test_bleu_equals_sacrebleu_and_falls_back_without_the_spm_model(monkeypatch, tmp_path):
    hyps = ["Everyone has the right to life and liberty.", "No one shall be held in slavery."]
    refs = ["Everyone has the right to life, liberty and security of person.",
            "No one shall be held in slavery or servitude."]
    score, tok = M.bleu(hyps, refs, tokenize="intl")
    assert tok == "intl" and score == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="intl").score)
    monkeypatch.setattr(sacrebleu_utils, "SACREBLEU_DIR", str(tmp_path))
    assert M.bleu_tokenizer("swh") == ("intl", False)  # nothing on disk: no download, a stated fallback
    assert M.bleu_tokenizer("cmn") == ("zh", False)
    assert M.bleu_tokenizer("tha") == ("char", False)
    model = Path(M.spm_model_path("flores200"))
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    assert M.bleu_tokenizer("swh") == ("flores200", True)


def test_sentence_split_and_code_switching():
    assert clauses("पहला वाक्य। दूसरा वाक्य।") == ["पहला वाक्य।", "दूसरा वाक्य।"]
    assert clauses("第一句。第二句。") == ["第一句。", "第二句。"]
    assert clauses("ሰላም ነው። ደህና ነህ?") == ["ሰላም ነው።", "ደህና ነህ?"]
    lid = load_identifier("lid176")
    en = "Everyone has the right to life, liberty and security of person."
    sw = "Kila mtu ana haki ya kuishi, haki ya uhuru, na haki ya kulindwa nafsi yake."
    mixed = M.check_language(f"{en} {sw}", "eng", lid.predict)
    assert mixed.code_switch and set(mixed.sentence_langs) == {"eng", "swh"}
    pure = M.check_language(f"{sw} Watu wote wamezaliwa huru, hadhi na haki zao ni sawa.", "swh", lid.predict)
    assert pure.correct and not pure.code_switch
    wrong = M.check_language(en, "swh", lid.predict)
    assert not wrong.correct and wrong.predicted == "eng"
    empty = M.check_language("  ", "swh", lid.predict)
    assert empty.predicted == "und" and not empty.correct


# ------------------------------------------------------------------------------------------------ data files


def test_example_files_match_their_schemas():
    for name in ("prompts.jsonl", "summarization.jsonl", "translation.jsonl", "mc.jsonl"):
        rows = load_jsonl(EXAMPLES / name)
        assert rows and len({r["id"] for r in rows}) == len(rows), name
    mt = load_jsonl(EXAMPLES / "translation.jsonl")
    assert {r["tgt_lang"] for r in mt} >= {"swh", "yor", "hin", "eng"}
    assert len({r["lang"] for r in load_jsonl(EXAMPLES / "prompts.jsonl")}) >= 10


def test_bad_records_are_named(tmp_path):
    (tmp_path / "mc.jsonl").write_text('{"lang": "eng", "question": "q", "choices": ["a", "b"], "answer": 2}\n')
    with pytest.raises(ValueError, match=r"mc.jsonl:1: 'choices'"):
        load_jsonl(tmp_path / "mc.jsonl")
    (tmp_path / "prompts.jsonl").write_text('{"lang": "sw"}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:1: missing field\(s\) \['prompt'\]"):
        load_jsonl(tmp_path / "prompts.jsonl")


# ------------------------------------------------------------------------------------------------ judges


class Scripted(Engine):
    """Answers each request with text from ``reply(request)``, parsed as the real engines do."""

    name = "scripted"
    model_key = "scripted"

    def __init__(self, reply):
        self.reply = reply

    def generate(self, requests: list[Request]) -> list[Result]:
        return [finish(r, self.reply(r), "stop", time.perf_counter()) for r in requests]


ITEMS = [{"id": "1", "lang": "swh", "prompt": "Taja haki moja.", "response": "Haki ya kuishi.", "baseline": "Sijui."},
         {"id": "2", "lang": "swh", "prompt": "Eleza uhuru.", "response": "Uhuru ni haki.", "baseline": "Hapana."}]


def test_pairwise_counts_a_win_only_when_both_orders_agree():
    model_answer = {it["response"] for it in ITEMS}

    def consistent(req):  # prefers the model's answer wherever it is shown
        a = req.messages[-1]["content"].split("Answer A (data):\n<<<\n")[1].split("\n>>>")[0]
        return json.dumps({"winner": "A" if a in model_answer else "B"})

    wins = J.judge_pairwise(Scripted(consistent), ITEMS)
    assert [v.outcome for v in wins] == ["win", "win"]
    biased = J.judge_pairwise(Scripted(lambda r: '{"winner": "A"}'), ITEMS)  # always the first shown
    assert [v.outcome for v in biased] == ["tie", "tie"]
    summary = J.summarize_pairwise(biased)["swh"]
    assert summary["pairwise_tie"] == 1.0 and summary["pairwise_win_rate"] == 0.5
    broken = J.judge_pairwise(Scripted(lambda r: '{"winner": "A"' if r.id.endswith(":ba") else '{"winner": "A"}'),
                              ITEMS)
    assert all(v.outcome is None for v in broken)
    assert J.summarize_pairwise(broken)["swh"]["pairwise_failures"] == 2


def test_facets_parse_and_failures_are_counted():
    good = json.dumps(dict.fromkeys(J.FACETS, 2))
    replies = iter([good, "not json", '{"language": 5}'])
    verdicts = J.judge_facets(Scripted(lambda r: next(replies)), [*ITEMS, {**ITEMS[0], "id": "3"}])
    assert verdicts[0].scores == dict.fromkeys(J.FACETS, 2)
    assert [v.error for v in verdicts[1:]] == ["parse_error", "schema_mismatch"]
    row = J.summarize_facets(verdicts)["swh"]
    assert row["judge_parse_failures"] == 2 and row["judge_n"] == 3 and row["judge_errors"] == 0
    assert row["judge_mean"] == 2.0 and row["judge_parse_fail_rate"] == pytest.approx(2 / 3)


def test_report_heatmap_is_self_contained():
    results = {"model": "m", "engine": "hf", "langs": ["swh", "yor"], "tasks": ["response_lang"],
               "table": {"swh": {"lang_correct": 1.0, "code_switch": 0.0}, "yor": {"lang_correct": 0.0}},
               "counts": {"swh": {"response_lang": 2}}, "meta": {}}
    page = render_html(results)
    assert "<svg" in page and "swh" in page and "yor" in page and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert colour(1.0, "lang_correct") == colour(0.0, "code_switch")  # lower is better for code-switching
    assert colour(None, "lang_correct") == "#eeeeee"



# ------------------------------------------------------------------------------------------------ recomputed


def recomputed_table(out_dir: Path) -> dict[str, dict[str, float]]:
    """The language table recomputed from the saved per-item predictions (``items.jsonl``) by the metric
    functions alone, with the LID model ``results.json`` says each language used; also checks that each saved
    item's own language verdict is what its saved output gives."""
    results = json.loads((out_dir / "results.json").read_text())
    items = [json.loads(x) for x in (out_dir / "items.jsonl").read_text().splitlines()]
    table: dict[str, dict[str, float]] = {}
    by_lang: dict[str, list[M.LangCheck]] = {}
    for it in (i for i in items if i["task"] == "response_lang"):
        ident = load_identifier(results["meta"]["lid_models"][it["lang"]])
        chk = M.check_language(it["output"], it["lang"], ident.predict)
        assert (chk.correct, chk.code_switch, chk.predicted) == (it["correct"], it["code_switch"], it["lid"]), it
        by_lang.setdefault(it["lang"], []).append(chk)
    for lang, checks in by_lang.items():
        table.setdefault(lang, {}).update(lang_correct=sum(c.correct for c in checks) / len(checks),
                                          code_switch=sum(c.code_switch for c in checks) / len(checks))
    sums: dict[str, tuple[list[str], list[str]]] = {}
    for it in (i for i in items if i["task"] == "summarization"):
        sums.setdefault(it["lang"], ([], []))[0].append(it["output"])
        sums[it["lang"]][1].append(it["reference"])
    for lang, (preds, refs) in sums.items():
        table.setdefault(lang, {}).update(M.rouge(preds, refs))
    pairs: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for it in (i for i in items if i["task"] == "translation"):
        pairs.setdefault((it["src_lang"], it["tgt_lang"]), ([], []))[0].append(it["output"])
        pairs[(it["src_lang"], it["tgt_lang"])][1].append(it["reference"])
    into: dict[str, list[float]] = {}
    for (src, tgt), (hyps, refs) in pairs.items():
        chrf = M.chrf_pp(hyps, refs)
        assert results["details"]["translation"][f"{src}-{tgt}"]["chrf"] == pytest.approx(chrf)
        into.setdefault(tgt, []).append(chrf)
    for lang, scores in into.items():
        table.setdefault(lang, {})["chrf_into"] = sum(scores) / len(scores)
    return table


def assert_table_recomputes(out_dir: Path) -> dict[str, dict[str, float]]:
    """Every value of ``table.json`` that ``recomputed_table`` recomputes is the recomputed value."""
    rows = json.loads((out_dir / "table.json").read_text())["rows"]
    again = recomputed_table(out_dir)
    assert again and set(again) <= set(rows)
    for lang, metrics in again.items():
        for name, value in metrics.items():
            assert rows[lang][name] == pytest.approx(value), (lang, name)
    return rows


class Oracle(Engine):
    """Answers every evaluation request with its reference (the translation's ``tgt``, the summary) or, for a
    prompt, with the prompt itself (text in the prompt's language); ``wrong`` answers everything with one English
    sentence instead."""

    name = "oracle"
    model_key = "oracle"

    def __init__(self, wrong: bool = False) -> None:
        self.wrong = wrong
        self.answers = {f"prompt:{r['id']}": r["prompt"] for r in load_jsonl(EXAMPLES / "prompts.jsonl")}
        self.answers |= {f"sum:{r['id']}": r["summary"] for r in load_jsonl(EXAMPLES / "summarization.jsonl")}
        self.answers |= {f"mt:{r['id']}": r["tgt"] for r in load_jsonl(EXAMPLES / "translation.jsonl")}

    def generate(self, requests: list[Request]) -> list[Result]:
        return [finish(r, WRONG if self.wrong else self.answers[r.id], "stop", time.perf_counter())
                for r in requests]


WRONG = "The weather was cold and grey for most of the week, so we stayed at home and read books."


def test_references_score_full_marks_and_a_wrong_answer_scores_lower(tmp_path):
    """The metrics through ``evaluate``, where their values are fixed by arithmetic: the references as
    predictions give chrF++ = BLEU = ROUGE = 100, and text in the prompt's language gives lang_correct = 1; one
    English sentence for everything scores lower on every metric and 0 on language in Swahili and French. Both
    tables also recompute from the saved predictions."""
    kw = {"tasks": ["response_lang", "summarization", "translation"], "langs": ["swh", "fra"],
          "data_dir": EXAMPLES, "limit": 2}
    right = evaluate("oracle", engine=Oracle(), out_dir=tmp_path / "right", **kw)
    wrong = evaluate("oracle", engine=Oracle(wrong=True), out_dir=tmp_path / "wrong", **kw)
    good, bad = assert_table_recomputes(tmp_path / "right"), assert_table_recomputes(tmp_path / "wrong")
    assert set(good) == set(bad) == {"eng", "fra", "swh"}
    for lang in ("swh", "fra"):
        assert good[lang]["lang_correct"] == 1.0 and good[lang]["code_switch"] == 0.0
        assert bad[lang]["lang_correct"] == 0.0
    for lang in ("swh", "fra", "eng"):  # into each: eng->swh, eng->fra, swh->eng
        assert good[lang]["chrf_into"] == pytest.approx(100.0) and good[lang]["bleu_into"] == pytest.approx(100.0)
        assert bad[lang]["chrf_into"] < 30 and bad[lang]["bleu_into"] < 10
    for t in M.ROUGE_TYPES:
        assert good["fra"][t] == pytest.approx(100.0) and bad["fra"][t] < 30
    assert right["counts"]["swh"]["response_lang"] == 2 and right["counts"]["fra"]["summarization"] == 2
    assert wrong["counts"] == right["counts"]  # the same items, scored differently


# ------------------------------------------------------------------------------------------------ with the model


@pytest.fixture(scope="module")
def engine():
    from required import require

    from synth.llm import load_engine

    require("smollm2")
    eng = load_engine("hf", "smollm2")
    yield eng
    eng.close()


def test_loglikelihood_equals_a_manual_forward_pass(engine):
    """What the harness computes for synth's pairs, in synth's order, is log p(continuation | context) by one
    forward pass, tokenised as the harness does (the pair whole, then split at the context's tokens, the context's
    trailing newline moved to the continuation)."""
    import torch

    model, tok = engine.model, engine.tokenizer
    ctx = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False,
                                  add_generation_prompt=True)
    conts = ["Paris", "The capital of France is Paris."]
    ours = loglikelihoods(model, tok, [(ctx, c) for c in conts])
    assert len(ours) == 2 and ours[0] != ours[1]
    for ll, cont in zip(ours, conts, strict=True):
        head = ctx.rstrip()
        whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
        c = tok(head, add_special_tokens=False)["input_ids"]
        x = whole[len(c):]
        with torch.inference_mode():
            logits = model(torch.tensor([whole])).logits[0]
        manual = sum(torch.log_softmax(logits[len(c) - 1 + k].float(), -1)[t].item() for k, t in enumerate(x))
        assert ll == pytest.approx(manual, abs=1e-3)


def test_mc_picks_the_choice_the_model_prefers(engine):
    q = {"id": "q", "lang": "eng", "question": "What is the capital of France?",
         "choices": ["Paris", "Xqzvw Blorft"], "answer": 0}
    [res] = score_mc(engine.model, engine.tokenizer, [q])
    assert res["pred"] == 0 and res["correct"] and res["loglik"][0] > res["loglik"][1]
    [letters] = score_mc(engine.model, engine.tokenizer, [q], fmt="letters")
    assert len(letters["loglik"]) == 2


def test_judge_parse_failures_are_counted_with_tiny_max_tokens(engine):
    verdicts = J.judge_facets(engine, ITEMS, max_tokens=3)
    assert all(v.scores is None and v.error == "parse_error" for v in verdicts)
    assert J.summarize_facets(verdicts)["swh"]["judge_parse_failures"] == 2


@pytest.mark.slow
def test_evaluate_writes_the_language_table(engine, tmp_path):
    res = evaluate("smollm2", tasks=["response_lang", "summarization", "translation", "mc"],
                   langs=["swh", "fra", "eng"], data_dir=EXAMPLES, engine=engine, out_dir=tmp_path, limit=1,
                   max_new_tokens=12)
    table = json.loads((tmp_path / "table.json").read_text())
    assert {"swh", "fra", "eng"} <= set(table["rows"])
    for lang in ("swh", "fra", "eng"):
        assert 0.0 <= table["rows"][lang]["lang_correct"] <= 1.0
        assert "code_switch" in table["rows"][lang] and "chrf_into" in table["rows"][lang]
    assert_table_recomputes(tmp_path)  # the numbers are those of the saved outputs, not only in range
    assert "rouge1" in table["rows"]["fra"] and "mc_acc" in table["rows"]["eng"]
    assert res["meta"]["bleu"]["tokenizers"]  # which BLEU tokenizer was used is recorded
    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page and "answer in prompt language" in page
    items = [json.loads(x) for x in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert {i["task"] for i in items} == {"response_lang", "summarization", "translation", "mc"}
    assert engine.model is not None  # an engine passed in is left open
