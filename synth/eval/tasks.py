"""Evaluation tasks over local JSONL files, and ``evaluate`` that runs them and writes the report.

Files in ``data_dir`` (schemas in ``synth/eval/README.md``; one JSON object per line, UTF-8):

=================== ================================================== ==========================================
task                file                                               fields
=================== ================================================== ==========================================
``response_lang``   ``prompts.jsonl``                                  ``id``, ``lang``, ``prompt``
``judge``           ``prompts.jsonl``                                  + optional ``reference``
``pairwise``        ``prompts.jsonl``                                  + ``baseline`` (or ``baseline_model=``)
``summarization``   ``summarization.jsonl`` (XLSUM-style)              ``id``, ``lang``, ``text``, ``summary``
``translation``     ``translation.jsonl`` (FLORES-style)               ``id``, ``src``, ``tgt``, ``src_lang``,
                                                                       ``tgt_lang``
``mc``              ``mc.jsonl`` (MMLU-style)                          ``id``, ``lang``, ``question``,
                                                                       ``choices`` (list), ``answer`` (index)
=================== ================================================== ==========================================

Languages are ISO 639-3 (any spelling ``synth.lang.canonical`` accepts is normalised).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synth.eval import judge as judges
from synth.eval import metrics as M
from synth.eval.settings import EvalSettings
from synth.extract.lid import choose_model, load_identifier
from synth.io import atomic_write_text
from synth.lang import ENGLISH, LanguageError, canonical
from synth.lang import name as language_name
from synth.llm import Engine, Request, Sampling, load_engine
from synth.prompts import load_prompt

TASKS = ("response_lang", "summarization", "translation", "mc", "judge", "pairwise")
FILES = {"response_lang": "prompts.jsonl", "judge": "prompts.jsonl", "pairwise": "prompts.jsonl",
         "summarization": "summarization.jsonl", "translation": "translation.jsonl", "mc": "mc.jsonl"}
REQUIRED = {"prompts.jsonl": ("lang", "prompt"), "summarization.jsonl": ("lang", "text", "summary"),
            "translation.jsonl": ("src", "tgt", "src_lang", "tgt_lang"),
            "mc.jsonl": ("lang", "question", "choices", "answer")}
LANG_FIELDS = ("lang", "src_lang", "tgt_lang")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "eval"  # the default data_dir


# ------------------------------------------------------------------------------------------------ data


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of one task file, checked against its schema; languages normalised, missing ids filled in."""
    path = Path(path)
    need = REQUIRED.get(path.name, ())
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e})") from e
        missing = [k for k in need if k not in rec]
        if missing:
            raise ValueError(f"{path}:{n}: missing field(s) {missing} (see synth/eval/README.md)")
        try:
            rec.update({k: canonical(rec[k]) for k in LANG_FIELDS if k in rec})
        except LanguageError as e:
            raise LanguageError(f"{path}:{n}: {e}") from e
        if path.name == "mc.jsonl":
            choices, answer = rec["choices"], rec["answer"]
            if not isinstance(choices, list) or len(choices) < 2 or not isinstance(answer, int) \
                    or not 0 <= answer < len(choices):
                raise ValueError(f"{path}:{n}: 'choices' must be a list of >= 2 and 'answer' an index into it")
        rec.setdefault("id", f"{path.stem}-{n}")
        rec["id"] = str(rec["id"])
        rows.append(rec)
    return rows


def _keep(rec: dict[str, Any], langs: set[str] | None) -> bool:
    if langs is None:
        return True
    if "lang" in rec:
        return rec["lang"] in langs
    return {rec["src_lang"], rec["tgt_lang"]} <= langs | {ENGLISH}


def _limit(rows: list[dict[str, Any]], limit: int | None, key: str = "lang") -> list[dict[str, Any]]:
    if limit is None:
        return rows
    seen: dict[str, int] = defaultdict(int)
    out = []
    for r in rows:
        k = r.get(key) or f"{r.get('src_lang')}-{r.get('tgt_lang')}"
        if seen[k] < limit:
            seen[k] += 1
            out.append(r)
    return out


# ------------------------------------------------------------------------------------------------ mc


def loglikelihoods(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 8
                   ) -> list[float]:
    """log p(continuation | context) for each ``(context, continuation)``, computed by lm-evaluation-harness (its
    transformers model class, over the model already loaded): the numbers the community's multiple-choice tasks
    use, with the harness's batching and tokenisation (the pair encoded whole, then split; a context's trailing
    whitespace moved to the continuation)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    for ctx, cont in pairs:
        if not ctx or not cont:
            raise ValueError(f"empty context or continuation: {ctx[:40]!r} / {cont[:40]!r}")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]
    return [float(ll) for ll, _greedy in lm.loglikelihood(requests, disable_tqdm=True)]


LETTERS = "ABCDEFGHIJ"


def mc_pairs(tokenizer: Any, rec: dict[str, Any], fmt: str = "cloze") -> list[tuple[str, str]]:
    """``(context, continuation)`` per choice. ``cloze``: the question as the user turn, each choice's text as
    the answer; ``letters``: the choices listed with letters, each letter as the answer."""
    if fmt == "cloze":
        user = rec["question"]
        conts = list(rec["choices"])
    elif fmt == "letters":
        if len(rec["choices"]) > len(LETTERS):
            raise ValueError(f"{rec['id']}: more choices than letters")
        listed = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(rec["choices"]))
        user = f"{rec['question']}\n\n{listed}"
        conts = [LETTERS[i] for i in range(len(rec["choices"]))]
    else:
        raise ValueError(f"mc_format must be 'cloze' or 'letters', not {fmt!r}")
    ctx = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                        add_generation_prompt=True)
    return [(ctx, c) for c in conts]


def score_mc(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], fmt: str = "cloze",
             batch_size: int = 8) -> list[dict[str, Any]]:
    """Per question: the log-likelihood of each choice, the predicted index (by sum, and by sum per character of
    the choice, ``acc_norm``) and whether each is right."""
    pairs, spans = [], []
    for rec in rows:
        p = mc_pairs(tokenizer, rec, fmt)
        spans.append((len(pairs), len(pairs) + len(p)))
        pairs.extend(p)
    lls = loglikelihoods(model, tokenizer, pairs, batch_size=batch_size)
    out = []
    for rec, (a, b) in zip(rows, spans, strict=True):
        ll = lls[a:b]
        norm = [s / max(1, len(cont)) for s, (_, cont) in zip(ll, pairs[a:b], strict=True)]
        pred = max(range(len(ll)), key=ll.__getitem__)
        pred_norm = max(range(len(norm)), key=norm.__getitem__)
        out.append({"id": rec["id"], "lang": rec["lang"], "loglik": ll, "pred": pred, "pred_norm": pred_norm,
                    "correct": pred == rec["answer"], "correct_norm": pred_norm == rec["answer"]})
    return out


def _causal_lm(engine: Engine, model: str) -> tuple[Any, Any]:
    """The hf engine's model and tokenizer, or a transformers copy for other engines."""
    inner = getattr(engine, "engine", engine)
    held = inner.causal_lm() if isinstance(inner, Engine) else None
    if held is not None:  # an engine that holds a transformers model lends it
        return held
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth.devices import visible_gpus
    from synth.models import resolve_model

    path = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    lm.to("cuda" if visible_gpus() else "cpu").eval()
    return lm, tok


# ------------------------------------------------------------------------------------------------ evaluate


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


class _LID:
    """Identifiers by name, loaded once; ``for_lang`` applies the ``lid`` setting (``auto``: choose_model)."""

    def __init__(self, spec: str = "auto") -> None:
        self.spec = spec
        self._loaded: dict[str, Any] = {}
        self.used: dict[str, str] = {}

    def for_lang(self, lang: str) -> Any:
        name = choose_model(lang) if self.spec == "auto" else self.spec
        self.used[lang] = name
        if name not in self._loaded:
            self._loaded[name] = load_identifier(name)
        return self._loaded[name]


def evaluate(
    model: str,
    tasks: Sequence[str] | None = None,
    langs: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    engine: str | Engine = EvalSettings.engine,
    out_dir: str | Path | None = None,
    *,
    judge_model: str | None = None,
    judge_engine: str | None = None,
    baseline_model: str | None = None,
    limit: int | None = None,
    max_new_tokens: int = EvalSettings.max_tokens,
    judge_max_tokens: int = EvalSettings.judge_max_tokens,
    mc_format: str = EvalSettings.mc_format,
    lid: str = EvalSettings.lid,
    engine_options: dict[str, Any] | None = None,
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on the ``tasks`` whose files are in ``data_dir`` and write ``out_dir``.

    ``tasks=None``: every task whose file exists (``pairwise`` only where a baseline is available). ``langs``:
    only these languages (translation pairs whose two sides are in ``langs`` or English). ``limit``: at most this
    many items per language (per direction for translation). ``judge_model``: the judge (default: the evaluated
    model judges itself, which the results flag). ``lid``: ``auto`` (per language, ``choose_model``), ``lid176``,
    ``heliport`` or a fastText model path.

    ``engine`` is an engine name (``hf``, ``vllm``, ``openai``) or an already loaded ``Engine`` (then ``model`` only
    labels the results, and the engine is left open).

    Writes ``results.json`` (everything), ``table.json`` (language x metric), ``items.jsonl`` (per item outputs
    and scores) and ``report.html`` (heatmap) to ``out_dir``; returns the results.
    """
    from synth.eval.report import write_report

    t0 = time.perf_counter()
    data_dir = Path(data_dir) if data_dir else EXAMPLES
    want = {canonical(x) for x in langs} if langs else None
    explicit = tasks is not None
    tasks = list(tasks) if tasks is not None else list(TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}: choose from {', '.join(TASKS)}")
    data: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    for task in tasks:
        path = data_dir / FILES[task]
        if not path.exists():
            if explicit:
                raise FileNotFoundError(f"task {task} needs {path} (see synth/eval/README.md)")
            skipped[task] = f"no {FILES[task]}"
            continue
        rows = [r for r in load_jsonl(path) if _keep(r, want)]
        data[task] = _limit(rows, limit)
    if "pairwise" in data and baseline_model is None:
        with_base = [r for r in data["pairwise"] if r.get("baseline")]
        if not with_base and not explicit:
            skipped["pairwise"] = "no baseline answers in prompts.jsonl and no baseline_model"
            del data["pairwise"]
        elif not with_base:
            raise ValueError("pairwise needs a 'baseline' answer per prompt or baseline_model=")
        else:
            data["pairwise"] = with_base

    lid_models = _LID(lid)
    table: dict[str, dict[str, float]] = defaultdict(dict)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    items: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    sampling = Sampling(max_tokens=max_new_tokens, temperature=0.0)

    if isinstance(engine, Engine):
        eng, engine = engine, engine.name
        opened: list[Engine] = []
    else:
        eng = load_engine(engine, model, cache=cache, **(engine_options or {}))
        opened = [eng]
    try:
        # ---- one generate call for every generation task
        reqs: list[Request] = []
        prompt_rows = {r["id"]: r for t in ("response_lang", "judge", "pairwise") for r in data.get(t, [])}
        for r in prompt_rows.values():
            reqs.append(Request(id=f"prompt:{r['id']}", messages=[{"role": "user", "content": r["prompt"]}],
                                sampling=sampling))
        if "summarization" in data:
            tpl = load_prompt("eval_summarize")
            for r in data["summarization"]:
                reqs.append(Request(id=f"sum:{r['id']}", sampling=sampling,
                                    messages=tpl.render(language=language_name(r["lang"]), text=r["text"])))
        if "translation" in data:
            tpl = load_prompt("eval_translate")
            for r in data["translation"]:
                reqs.append(Request(id=f"mt:{r['id']}", sampling=sampling, messages=tpl.render(
                    src_language=language_name(r["src_lang"]),
                    tgt_language=language_name(r["tgt_lang"]), text=r["src"])))
        results = {res.id: res for res in eng.generate(reqs)} if reqs else {}

        def output(key: str) -> tuple[str, str | None]:
            res = results[key]
            return (res.text or "").strip() if res.ok else "", res.error

        gen_errors: dict[str, int] = defaultdict(int)
        answers: dict[str, str] = {}
        for rid, r in prompt_rows.items():
            text, err = output(f"prompt:{rid}")
            answers[rid] = text
            if err:
                gen_errors[r["lang"]] += 1

        # ---- response language
        if "response_lang" in data:
            by: dict[str, list[M.LangCheck]] = defaultdict(list)
            for r in data["response_lang"]:
                ident = lid_models.for_lang(r["lang"])
                chk = M.check_language(answers[r["id"]], r["lang"], ident.predict)
                by[r["lang"]].append(chk)
                items.append({"task": "response_lang", "id": r["id"], "lang": r["lang"], "prompt": r["prompt"],
                              "output": answers[r["id"]], "lid": chk.predicted, "lid_score": chk.score,
                              "correct": chk.correct, "sentence_langs": chk.sentence_langs,
                              "code_switch": chk.code_switch})
            for lang, checks in by.items():
                table[lang]["lang_correct"] = _mean([c.correct for c in checks])
                table[lang]["code_switch"] = _mean([c.code_switch for c in checks])
                counts[lang]["response_lang"] = len(checks)
                if gen_errors.get(lang):
                    counts[lang]["generation_errors"] = gen_errors[lang]
            meta["lid_models"] = dict(sorted(lid_models.used.items()))

        # ---- summarization
        if "summarization" in data:
            by_pairs: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
            for r in data["summarization"]:
                text, err = output(f"sum:{r['id']}")
                by_pairs[r["lang"]][0].append(text)
                by_pairs[r["lang"]][1].append(r["summary"])
                items.append({"task": "summarization", "id": r["id"], "lang": r["lang"], "output": text,
                              "reference": r["summary"], "error": err,
                              **M.rouge([text], [r["summary"]])})
            for lang, (preds, refs) in by_pairs.items():
                table[lang].update(M.rouge(preds, refs))
                counts[lang]["summarization"] = len(preds)

        # ---- translation
        if "translation" in data:
            directions: dict[tuple[str, str], tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
            for r in data["translation"]:
                text, err = output(f"mt:{r['id']}")
                directions[(r["src_lang"], r["tgt_lang"])][0].append(text)
                directions[(r["src_lang"], r["tgt_lang"])][1].append(r["tgt"])
                items.append({"task": "translation", "id": r["id"], "src_lang": r["src_lang"],
                              "tgt_lang": r["tgt_lang"], "output": text, "reference": r["tgt"], "error": err})
            per_dir, into, frm = {}, defaultdict(list), defaultdict(list)
            tokenizers = set()
            for (src, tgt), (hyps, refs) in sorted(directions.items()):
                chrf = M.chrf_pp(hyps, refs)
                score, tok = M.bleu(hyps, refs, tgt_lang=tgt)
                tokenizers.add(tok)
                per_dir[f"{src}-{tgt}"] = {"chrf": chrf, "bleu": score, "bleu_tokenizer": tok, "n": len(hyps)}
                into[tgt].append((chrf, score, len(hyps)))
                frm[src].append((chrf, score, len(hyps)))
            for name, groups in (("into", into), ("from", frm)):
                for lang, scores in groups.items():
                    table[lang][f"chrf_{name}"] = _mean([s[0] for s in scores])
                    table[lang][f"bleu_{name}"] = _mean([s[1] for s in scores])
                    counts[lang][f"translation_{name}"] = sum(s[2] for s in scores)
            details["translation"] = per_dir
            spm = bool(tokenizers) and tokenizers <= set(M.SPM_KEYS)
            meta["bleu"] = {
                "tokenizers": sorted(tokenizers), "spbleu": spm,
                "note": "spBLEU (FLORES SentencePiece)" if spm else (
                    f"NOT spBLEU: no FLORES SentencePiece model in {Path(M.spm_model_path('flores200')).parent} "
                    "(sacrebleu would download it); BLEU used sacrebleu's fallback tokenizer(s) "
                    + ", ".join(sorted(tokenizers))),
            }

        # ---- multiple choice by log-likelihood
        if "mc" in data:
            lm, tok = _causal_lm(eng, model)
            scored = score_mc(lm, tok, data["mc"], fmt=mc_format)
            by_mc: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for s in scored:
                by_mc[s["lang"]].append(s)
                items.append({"task": "mc", **s})
            for lang, ss in by_mc.items():
                table[lang]["mc_acc"] = _mean([s["correct"] for s in ss])
                table[lang]["mc_acc_norm"] = _mean([s["correct_norm"] for s in ss])
                counts[lang]["mc"] = len(ss)
            meta["mc_format"] = mc_format

        # ---- judges
        if "judge" in data or "pairwise" in data:
            if judge_model is None or (judge_model == model and (judge_engine or engine) == engine):
                jeng = eng
            else:
                jeng = load_engine(judge_engine or engine, judge_model, cache=cache)
                opened.append(jeng)
            meta["judge"] = {"model": judge_model or model, "self_judged": jeng is eng}
        if "judge" in data:
            verdicts = judges.judge_facets(jeng, [{**r, "response": answers[r["id"]]} for r in data["judge"]],
                                           max_tokens=judge_max_tokens)
            for v in verdicts:
                items.append({"task": "judge", "id": v.id, "lang": v.lang, "scores": v.scores, "error": v.error,
                              "raw": v.raw})
            for lang, row in judges.summarize_facets(verdicts).items():
                for k in ("judge_n", "judge_parse_failures", "judge_errors"):
                    counts[lang][k] = int(row.pop(k))
                table[lang].update(row)
        if "pairwise" in data:
            rows = data["pairwise"]
            if baseline_model is not None and any(not r.get("baseline") for r in rows):
                beng = load_engine(engine, baseline_model, cache=cache, **(engine_options or {}))
                opened.append(beng)
                todo = [r for r in rows if not r.get("baseline")]
                outs = beng.generate([Request(id=r["id"], messages=[{"role": "user", "content": r["prompt"]}],
                                              sampling=sampling) for r in todo])
                base = {r["id"]: (o.text or "").strip() for r, o in zip(todo, outs, strict=True)}
                rows = [{**r, "baseline": r.get("baseline") or base[r["id"]]} for r in rows]
                meta["baseline_model"] = baseline_model
            pv = judges.judge_pairwise(jeng, [{**r, "response": answers[r["id"]]} for r in rows])
            for v in pv:
                items.append({"task": "pairwise", "id": v.id, "lang": v.lang, "first": v.first,
                              "second": v.second, "outcome": v.outcome, "errors": v.errors})
            for lang, row in judges.summarize_pairwise(pv).items():
                for k in ("pairwise_n", "pairwise_failures"):
                    counts[lang][k] = int(row.pop(k))
                table[lang].update(row)
    finally:
        for e in opened:
            e.close()

    langs_out = sorted(table)
    results = {
        "model": model,
        "engine": engine,
        "data_dir": str(data_dir),
        "tasks": [t for t in tasks if t in data],
        "skipped": skipped,
        "langs": langs_out,
        "table": {lang: dict(sorted(table[lang].items())) for lang in langs_out},
        "counts": {lang: dict(sorted(counts[lang].items())) for lang in sorted(counts)},
        "details": details,
        "meta": {**meta, "runtime_s": round(time.perf_counter() - t0, 2)},
    }
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_text(out / "results.json", json.dumps(_clean(results), indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(out / "table.json", json.dumps(_clean(
            {"langs": langs_out, "metrics": sorted({m for r in table.values() for m in r}),
             "rows": results["table"]}), indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(out / "items.jsonl", "".join(json.dumps(_clean(i), ensure_ascii=False) + "\n"
                                                       for i in items))
        write_report(results, out / "report.html")
        results["out_dir"] = str(out)
    return results


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj
