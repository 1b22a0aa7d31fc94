"""Throughput and memory of ``synth extract`` against a datatrove pipeline doing the same job.

Both run on the same synthetic corpus, with the same LID model file, the same worker count and the same
quality and MinHash settings where the two libraries have an equivalent:

* synth: ``synth.stages.extract.extract`` with ``ExtractSettings(lang=..., lid_model="lid176")`` and otherwise
  defaults (fragments of 200-2000 characters, LID score ≥ 0.5, the bundled quality.toml, exact + MinHash dedup
  16 bands × 8 rows on word 5-grams), through the Python API with ``progress=False``. lid176 is named because
  ``auto`` picks heliport when it is installed (stronger for Swahili, but ~0.9 GB a worker and a different
  model from datatrove's); ``--synth-lid auto`` measures that instead.
* datatrove: JsonlReader → LanguageFilter (fastText, the same lid.176.ftz file) → GopherRepetitionFilter →
  GopherQualityFilter → JsonlWriter, then its four MinHash stages (signatures, buckets, clusters, filter;
  16 buckets × 8 hashes, 5-gram shingles) → JsonlWriter, each on a LocalPipelineExecutor.

Unit of work: synth cuts documents into paragraph windows and filters and deduplicates *those*; datatrove keeps
or drops whole documents. Throughput is therefore counted on the input for both (input documents per second,
input megabytes per second); output counts are reported but are fragments for synth and documents for
datatrove.

Every run is a fresh subprocess with a fresh output directory (so nothing is resumed and the RSS is that
run's). Peak memory is sampled every 50 ms over the whole process tree with psutil (the sum of the RSS of the
process and all its descendants: worker pools, datatrove's manager and forkserver), with the largest single
process beside it, and CPU time (user + system) summed over the same tree. Times are medians over ``--repeats``
runs; on a machine shared with other work, CPU time is the steadier comparison (the 1-minute load average
before and after each run is printed).

    .venv/bin/python bench/extract.py [--mb 10] [--scale 4] [--workers 2] [--repeats 3] [--json out.json]

Needs datatrove and the parts of its ``processing`` extra these blocks use: ``pip install datatrove spacy
fasteners orjson "xxhash<4"`` (xxhash 4 refuses the ``str`` n-grams datatrove's MinHash hashes). With
``--no-datatrove`` only synth runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

UDHR = REPO / "examples" / "lid_eval" / "udhr_paragraphs.jsonl"
MB = 1_000_000
RESULT_TAG = "@@RESULT "
DONE_TAG = "@@DONE"  # the child's pipeline has finished: the parent stops measuring, then lets it go on

# --- corpus ---------------------------------------------------------------------------------------------

_SENT = re.compile(r"(?<=[.;:!?。！？።।])\s*")
_TOKEN = re.compile(r"\w+|\W+")
_NOSPACE = {"cmn", "jpn", "tha"}


class CorpusMaker:
    """Documents of several paragraphs from UDHR sentences, mostly in one language, with planted problems.

    The UDHR has ~60 paragraphs a language, far too little text for a corpus of megabytes, and synth's
    fragments (~200-400 characters) would then be near duplicates of each other. So every sentence that goes
    into a document is a fresh variant: with some chance two sentences are spliced at a comma, then 12% of
    its words are replaced by random words of the same language. Two variants of one sentence share ~30% of
    their word 5-grams (Jaccard ~0.2, far below the ~0.7 MinHash threshold), while the text stays in its
    language for LID and has realistic word lengths, punctuation and line structure for the quality rules.

    Mix (by document): 62% clean target language, 5% target language with one paragraph in another
    language, 20% other languages, 5% exact copies and 5% near copies (1.5% of words changed) of an earlier
    document, 3% junk in the target language (repeated menu lines or tables of numbers).
    """

    def __init__(self, lang: str, seed: int) -> None:
        rows = [json.loads(line) for line in UDHR.read_text(encoding="utf-8").splitlines() if line.strip()]
        by_lang: dict[str, list[str]] = {}
        for r in rows:
            by_lang.setdefault(r["lang"], []).append(r["text"])
        self.lang = lang
        if lang not in by_lang:
            raise SystemExit(f"{UDHR} has no paragraphs in {lang!r}; it has {', '.join(sorted(by_lang))}")
        self.others = sorted(k for k in by_lang if k != lang)
        self.sentences = {k: [s for p in v for s in _SENT.split(p) if len(s) > 3] for k, v in by_lang.items()}
        self.vocab = {k: self._words(" ".join(v), k) for k, v in by_lang.items()}
        self.rng = random.Random(seed)
        self.docs: list[tuple[str, str]] = []  # (language, text) of the documents written so far

    @staticmethod
    def _words(text: str, lang: str) -> list[str]:
        if lang in _NOSPACE:
            return [c for c in text if c.isalnum()]
        return [t for t in re.findall(r"\w+", text) if not t.isdigit()]

    def _perturb(self, text: str, lang: str, p: float) -> str:
        rng, vocab = self.rng, self.vocab[lang]
        if lang in _NOSPACE:
            return "".join(rng.choice(vocab) if c.isalnum() and rng.random() < p else c for c in text)
        out = []
        for tok in _TOKEN.findall(text):
            if tok[0].isalnum() and not tok.isdigit() and rng.random() < p:
                new = rng.choice(vocab)
                tok = new.capitalize() if tok[0].isupper() else new.lower()
            out.append(tok)
        return "".join(out)

    def sentence(self, lang: str) -> str:
        rng = self.rng
        s = rng.choice(self.sentences[lang])
        if rng.random() < 0.3:
            a, b = s.split(", "), rng.choice(self.sentences[lang]).split(", ")
            if len(a) > 1 and len(b) > 1:
                s = ", ".join(a[: rng.randint(1, len(a) - 1)] + b[rng.randint(1, len(b) - 1):])
        return self._perturb(s, lang, 0.12)

    def paragraph(self, lang: str) -> str:
        sep = "" if lang in _NOSPACE else " "
        return sep.join(self.sentence(lang) for _ in range(self.rng.randint(1, 3)))

    def document(self) -> tuple[str, str]:
        rng = self.rng
        u = rng.random()
        n = rng.randint(2, 8)
        if u < 0.62:
            kind, text = "clean", "\n\n".join(self.paragraph(self.lang) for _ in range(n))
        elif u < 0.67:
            paras = [self.paragraph(self.lang) for _ in range(n)]
            paras.insert(rng.randint(0, n), self.paragraph(rng.choice(self.others)))
            kind, text = "mixed", "\n\n".join(paras)
        elif u < 0.87:
            other = rng.choice(self.others)
            kind, text = "other_lang", "\n\n".join(self.paragraph(other) for _ in range(n))
        elif u < 0.92 and self.docs:
            kind, text = "exact_dup", rng.choice(self.docs)[1]
        elif u < 0.97 and self.docs:
            lang, text = rng.choice(self.docs)
            kind, text = "near_dup", self._perturb(text, lang, 0.015)
        elif u < 0.985:
            menu = [self.sentence(self.lang)[:40].strip() for _ in range(4)]
            lines = [rng.choice(menu) for _ in range(rng.randint(12, 30))]
            kind, text = "junk_lines", self.paragraph(self.lang) + "\n\n" + "\n".join(lines)
        else:
            rows = [" | ".join(str(rng.randint(0, 99999)) for _ in range(6)) for _ in range(rng.randint(10, 30))]
            kind, text = "junk_digits", self.paragraph(self.lang) + "\n\n" + "\n".join(rows)
        if kind in ("clean", "mixed"):
            self.docs.append((self.lang, text))
        elif kind == "other_lang":
            self.docs.append((other, text))
        return kind, text


def make_corpus(folder: Path, mb: float, lang: str, seed: int, shard_mb: float) -> dict[str, Any]:
    """Write ``mb`` megabytes of JSON Lines shards of about ``shard_mb`` each; returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    maker = CorpusMaker(lang, seed)
    kinds: Counter[str] = Counter()
    total = docs = shard = 0
    f = None
    shard_bytes = 0
    while total < mb * MB:
        if f is None or shard_bytes >= shard_mb * MB:
            if f is not None:
                f.close()
            f = open(folder / f"shard-{shard:05d}.jsonl", "wb")  # noqa: SIM115
            shard, shard_bytes = shard + 1, 0
        kind, text = maker.document()
        line = (json.dumps({"id": f"doc{docs}", "text": text}, ensure_ascii=False) + "\n").encode()
        f.write(line)
        kinds[kind] += 1
        docs += 1
        total += len(line)
        shard_bytes += len(line)
    if f is not None:
        f.close()
    return {"dir": str(folder), "bytes": total, "docs": docs, "shards": shard, "kinds": dict(kinds)}


# --- children: one pipeline run each ---------------------------------------------------------------------


def _self_rss() -> dict[str, int]:
    import resource

    return {"self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "children_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


def _pipeline_done() -> dict[str, int]:
    """Tell the parent the measured part is over and wait until it has stopped sampling; then the counting
    and reading of outputs that follows stays out of the memory and CPU figures."""
    rss = _self_rss()
    print(DONE_TAG, flush=True)
    sys.stdin.readline()
    return rss


def child_synth(args: argparse.Namespace) -> dict[str, Any]:
    from synth.kernel import StageOutput
    from synth.stages.extract import ExtractSettings, extract

    settings = ExtractSettings(lang=args.lang, lid_model=args.lid_model)
    t0 = time.perf_counter()
    out = extract([args.input], args.work, settings, workers=args.workers, progress=False)
    seconds = time.perf_counter() - t0
    rss = _pipeline_done()

    frags = StageOutput.current(args.work, "01_fragments")
    fstats, xstats = frags.stats(), out.stats()
    text = out.read(columns=["fragment"]).column("fragment")
    import pyarrow.compute as pc

    out_bytes = int(pc.sum(pc.binary_length(text.cast("binary"))).as_py() or 0)
    result = {"seconds": seconds, "documents": fstats["counters"].get("documents", 0),
              "fragments_lang": frags.num_rows, "output_units": out.num_rows, "output_bytes": out_bytes,
              "dropped": {**fstats["dropped"], **xstats["dropped"]}, **rss}
    from synth.io import read_shard_meta

    result["worker_seconds"] = {o.manifest["stage"]: round(sum(read_shard_meta(p).get("seconds", 0.0)
                                                               for p in o.shards), 2) for o in (frags, out)}
    result["index"] = _synth_index(frags)
    return result


def _synth_index(frags: Any) -> dict[str, Any]:
    """Bytes of what ``decide()`` holds for dedup, per fragment, measured on this run's fragments."""
    import tracemalloc

    import numpy as np

    from synth.extract import dedup

    table = frags.read(columns=["dedup_exact", "minhash"])
    n = table.num_rows
    if n == 0:
        return {"fragments": 0}
    arrow_bytes = table.column("minhash").nbytes + table.column("dedup_exact").nbytes
    # the arrays decide() builds, exactly as it builds them
    bands = np.asarray(table.column("minhash").combine_chunks().flatten()).reshape(n, -1)
    exact = table.column("dedup_exact").to_numpy()
    array_bytes = bands.nbytes + exact.nbytes
    tracemalloc.start()
    dedup.find_duplicates(exact, bands, np.ones(n, dtype=bool))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"fragments": n, "bands": int(bands.shape[1]), "arrow_bytes": int(arrow_bytes),
            "array_bytes": int(array_bytes), "find_duplicates_peak_bytes": int(peak)}


def _local_language_filter(model_path: str, label: str, threshold: float) -> Any:
    """datatrove's ``LanguageFilter`` reading a local fastText model file, with two minimal overrides.

    1. Model file: ``LanguageFilter`` builds ``FT176LID``, whose ``model`` property fetches ``lid.176.bin``
       from a URL into datatrove's cache (``cached_asset_path_or_download``) on first use; no argument takes a
       local file. ``LocalFT176LID`` changes only that property, to open the given file: the same
       ``lid.176.ftz`` synth uses. Prediction (``FastTextLID.predict``: newlines to spaces, all labels, best
       score) and the keep rule (score > threshold) are datatrove's own.
    2. Dependency check: ``PipelineStep.__new__`` insists on the pip *distribution* ``fasttext-numpy2-wheel``
       (also on unpickling, in each worker). synth depends on ``fasttext-numpy2``, which installs the same
       ``fasttext`` module; installing both would overwrite one with the other. ``__new__`` is bypassed.
    """
    from datatrove.pipeline.filters import LanguageFilter
    from datatrove.utils.lid import FT176LID

    class LocalFT176LID(FT176LID):
        def __init__(self, path: str, langs: list[str]) -> None:
            super().__init__(langs)
            self.model_path = path

        @property
        def model(self):
            if self._model is None:
                from fasttext.FastText import _FastText

                self._model = _FastText(self.model_path)
            return self._model

    class LocalLanguageFilter(LanguageFilter):
        def __new__(cls, *args: Any, **kwargs: Any):
            return object.__new__(cls)

        def __init__(self, path: str, langs: list[str], language_threshold: float) -> None:
            super().__init__(languages=langs, language_threshold=language_threshold)
            self.model = LocalFT176LID(path, langs)

    return LocalLanguageFilter(model_path, [label], threshold)


def datatrove_settings(lang: str) -> dict[str, Any]:
    """datatrove filter arguments matched to synth's defaults for ``lang`` (see the README for the gaps)."""
    from synth.extract import quality
    from synth.lang import canonical

    code3 = canonical(lang)
    th = quality.load_thresholds(code3)
    from synth.stages.extract import ExtractSettings

    s = ExtractSettings(lang=lang, lid_model="lid176")
    return {
        "lid_label": _ft176_label(code3),
        "lid_threshold": s.lid_threshold,
        "word_language": code3,
        "repetition": {
            # synth's q_dup_line_ratio / q_dup_para_ratio are shares of *characters* in repeated lines and
            # paragraphs: datatrove's *_char_frac. synth has no share-of-count check.
            "dup_line_frac": None, "dup_para_frac": None,
            "dup_line_char_frac": th.max_dup_line_ratio, "dup_para_char_frac": th.max_dup_para_ratio,
            "top_n_grams": tuple((n, getattr(th, f"max_top_{n}gram_ratio")) for n in quality.TOP_NGRAMS),
            "dup_n_grams": tuple((n, getattr(th, f"max_dup_{n}gram_ratio")) for n in quality.DUP_NGRAMS),
        },
        "quality": {
            "min_doc_words": th.min_words, "max_doc_words": th.max_words,
            "min_avg_word_length": th.min_mean_word_len, "max_avg_word_length": th.max_mean_word_len,
            "max_symbol_word_ratio": th.max_symbol_ratio, "max_bullet_lines_ratio": th.max_bullet_lines_ratio,
            "max_ellipsis_lines_ratio": th.max_ellipsis_lines_ratio,
            "max_non_alpha_words_ratio": th.min_alpha_words_ratio,  # datatrove's name; it is a minimum
            "min_stop_words": None,  # English stop words by default: would drop every non-English document
        },
    }


def _ft176_label(code3: str) -> str:
    """The lid.176 label (``sw``) of a canonical ISO 639-3 code (``swh``), as synth maps labels."""
    from synth.extract.lid import LanguageIdentifier

    ident = LanguageIdentifier()
    for raw, code in ident._codes.items():
        if code == code3:
            return raw.removeprefix("__label__")
    raise SystemExit(f"lid.176 has no label for {code3}")


def child_datatrove(args: argparse.Namespace) -> dict[str, Any]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from synth.extract.dedup import MinHashSettings
    from synth.models import lid176_path

    cfg = datatrove_settings(args.lang)
    mh = MinHashSettings()
    mconf = MinhashConfig(n_grams=mh.ngram, num_buckets=mh.bands, hashes_per_bucket=mh.rows, seed=mh.seed)
    work = Path(args.work)
    tasks = len(list(Path(args.input).glob("*.jsonl")))
    lang = cfg["word_language"]

    lang_filter = _local_language_filter(str(lid176_path()), cfg["lid_label"], cfg["lid_threshold"])

    def executor(pipeline: list, n_tasks: int, name: str) -> Any:
        return LocalPipelineExecutor(pipeline=pipeline, tasks=n_tasks, workers=args.workers,
                                     logging_dir=str(work / "logs" / name))

    def reader(folder: Path) -> Any:
        return JsonlReader(str(folder), glob_pattern="*.jsonl*")

    stages = [
        executor([reader(Path(args.input)), lang_filter,
                  GopherRepetitionFilter(language=lang, **cfg["repetition"]),
                  GopherQualityFilter(language=lang, **cfg["quality"]),
                  JsonlWriter(str(work / "filtered"))], tasks, "filter"),
        executor([reader(work / "filtered"), MinhashDedupSignature(str(work / "sigs"), config=mconf,
                                                                   language=lang)], tasks, "minhash1"),
        executor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=mconf)],
                 mconf.num_buckets, "minhash2"),
        executor([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=mconf)], 1, "minhash3"),
        executor([reader(work / "filtered"), MinhashDedupFilter(str(work / "remove")),
                  JsonlWriter(str(work / "output"))], tasks, "minhash4"),
    ]
    names = ["filter", "minhash1", "minhash2", "minhash3", "minhash4"]
    stage_seconds = {}
    t0 = time.perf_counter()
    for name, stage in zip(names, stages, strict=True):
        t1 = time.perf_counter()
        stage.run()
        stage_seconds[name] = round(time.perf_counter() - t1, 2)
    seconds = time.perf_counter() - t0
    rss = _pipeline_done()

    import gzip

    units = out_bytes = 0
    for p in sorted((work / "output").glob("*.jsonl*")):
        with gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else open(p, encoding="utf-8") as f:
            for line in f:
                units += 1
                out_bytes += len(json.loads(line)["text"].encode())
    dropped, block_seconds = _datatrove_stats(work / "logs")
    sig_bytes = sum(p.stat().st_size for p in (work / "sigs").rglob("*.sig"))
    sig_docs = sum(1 for p in (work / "filtered").glob("*.jsonl*") for _ in _lines(p))
    return {"seconds": seconds, "output_units": units, "output_bytes": out_bytes, "dropped": dropped,
            "stage_seconds": stage_seconds, "worker_seconds": block_seconds,
            "index": {"documents": sig_docs, "signature_bytes": sig_bytes}, **rss}


def _lines(path: Path):
    import gzip

    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        yield from f


def _datatrove_stats(logs: Path) -> tuple[dict[str, int], dict[str, float]]:
    """From the stages' stats.json: documents dropped per block and reason, and each block's time summed
    over its tasks."""
    dropped: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for stats_file in sorted(logs.glob("*/stats.json")):
        for block in json.loads(stats_file.read_text()):
            # "🔻 - FILTER: 👯 Gopher Repetition" -> "Gopher Repetition"
            name = "".join(c for c in block.get("name", "?").split(":")[-1] if c.isascii()).strip()
            seconds[name] += (block.get("time_stats") or {}).get("total", 0.0)
            for key, value in (block.get("stats") or {}).items():
                n = value.get("total", 0) if isinstance(value, dict) else value
                if key.startswith("dropped_"):
                    dropped[f"{name}: {key.removeprefix('dropped_')}"] += int(n)
                elif key == "dropped" and not any(k.startswith("dropped_") for k in block["stats"]):
                    dropped[name] += int(n)
    return dict(dropped.most_common()), {k: round(v, 2) for k, v in seconds.most_common()}


def run_child() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", required=True, choices=["synth", "datatrove"])
    p.add_argument("--input", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--lang", required=True)
    p.add_argument("--lid-model", default="lid176")
    args = p.parse_args()
    result = (child_synth if args.child == "synth" else child_datatrove)(args)
    print(RESULT_TAG + json.dumps(result), flush=True)


# --- parent: run, sample memory, summarise ---------------------------------------------------------------


class TreeMonitor:
    """Samples a process and all its descendants: peak summed RSS, largest single RSS, and CPU seconds.

    CPU time is each process's own user + system time as last sampled, summed over every process seen; it
    misses at most one interval of a process that ends between samples. On a machine shared with other work
    it is the steadier measure: wall time stretches with the load, CPU time much less.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_tree = self.peak_one = 0
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for proc in procs:
                try:
                    with proc.oneshot():
                        rss = proc.memory_info().rss
                        t = proc.cpu_times()
                except psutil.Error:
                    continue
                total += rss
                self.peak_one = max(self.peak_one, rss)
                self.cpu[proc.pid] = t.user + t.system
            self.peak_tree = max(self.peak_tree, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def run_once(tool: str, corpus: dict[str, Any], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=tmp))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", tool, "--input", corpus["dir"],
           "--work", str(work / "run"), "--workers", str(args.workers), "--lang", args.lang,
           "--lid-model", args.synth_lid]
    log = work / "log.txt"
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=REPO)
        try:
            mem: TreeMonitor | None = TreeMonitor(proc.pid).__enter__()
        except ImportError:  # no psutil: only what the child measures itself
            mem = None
        lines: list[str] = []
        wall = float("nan")
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line == DONE_TAG:
                wall = time.perf_counter() - t0
                if mem is not None:
                    mem.__exit__()
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            lines.append(line)
        proc.wait()
        if mem is not None:
            mem.__exit__()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{tool} run failed (exit {proc.returncode}); log {log}:\n{tail}")
    result = json.loads([ln for ln in lines if ln.startswith(RESULT_TAG)][-1][len(RESULT_TAG):])
    result["wall_seconds"] = wall
    result["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if mem is not None:
        result["peak_tree_bytes"], result["peak_process_bytes"] = mem.peak_tree, mem.peak_one
        result["cpu_seconds"] = mem.cpu_seconds
    else:
        kb = max(result["self_maxrss_kb"], result["children_maxrss_kb"])
        result["peak_tree_bytes"] = result["peak_process_bytes"] = kb * 1024
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def summarise(runs: list[dict[str, Any]], corpus: dict[str, Any]) -> dict[str, Any]:
    """Medians over runs for time and memory; counts from the last run (they are the same in every run)."""
    secs = statistics.median(r["seconds"] for r in runs)
    last = runs[-1]
    out = {
        "runs": len(runs),
        "seconds": secs,
        "seconds_all": [round(r["seconds"], 2) for r in runs],
        "docs_per_s": corpus["docs"] / secs,
        "mb_per_s": corpus["bytes"] / MB / secs,
        "peak_tree_mb": statistics.median(r["peak_tree_bytes"] for r in runs) / MB,
        "peak_process_mb": statistics.median(r["peak_process_bytes"] for r in runs) / MB,
        "peak_tree_mb_all": [round(r["peak_tree_bytes"] / MB) for r in runs],
        "load_avg_1min": [r["load_avg_1min"] for r in runs],
        "output_units": last["output_units"],
        "output_mb": last["output_bytes"] / MB,
    }
    if all("cpu_seconds" in r for r in runs):
        cpu = statistics.median(r["cpu_seconds"] for r in runs)
        out.update(cpu_seconds=cpu, cpu_seconds_all=[round(r["cpu_seconds"], 1) for r in runs],
                   mb_per_cpu_s=corpus["bytes"] / MB / cpu)
    for key in ("fragments_lang", "documents", "dropped", "index", "worker_seconds", "stage_seconds"):
        if key in last:
            out[key] = last[key]
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    c1 = res["corpus"]
    s, d = res["synth"], res.get("datatrove")
    print()
    title = f"synth extract vs datatrove {res['datatrove_version']}" if d else "synth extract"
    print(f"## {title}: {c1['bytes'] / MB:.1f} MB, "
          f"{c1['docs']:,} documents in {c1['shards']} JSONL shards, --lang {args.lang}, {args.workers} workers, "
          f"median of {args.repeats} runs")
    print(f"corpus: {', '.join(f'{k} {v:,}' for k, v in sorted(c1['kinds'].items()))} documents")
    print("unit: synth keeps or drops paragraph-window FRAGMENTS (200-2000 chars) and deduplicates those;"
          " datatrove keeps or drops whole DOCUMENTS. Rates count input documents and input bytes for both.")
    print()
    print("| | synth | datatrove | synth/datatrove |")
    print("|---|---:|---:|---:|")
    rows = [("wall time, s", "seconds", 1), ("documents/s", "docs_per_s", 0), ("MB/s (input)", "mb_per_s", 2),
            ("CPU time, process tree, s", "cpu_seconds", 1), ("MB per CPU-second", "mb_per_cpu_s", 2),
            ("peak RSS, process tree, MB", "peak_tree_mb", 0),
            ("peak RSS, largest process, MB", "peak_process_mb", 0), ("output text, MB", "output_mb", 2)]
    for name, key, digits in rows:
        if key not in s:
            continue
        a, b = s[key], d[key] if d else None
        print(f"| {name} | {a:,.{digits}f} | {f'{b:,.{digits}f}' if d else '-'} | {_ratio(a, b) if d else '-'} |")
    out_d = f"{d['output_units']:,} documents" if d else "-"
    print(f"| output | {s['output_units']:,} fragments (of {s['fragments_lang']:,} in --lang) | {out_d} | - |")
    print()
    print(f"time per run, s: synth {s['seconds_all']}" + (f"; datatrove {d['seconds_all']}" if d else ""))
    if "cpu_seconds_all" in s:
        print(f"CPU time per run, s: synth {s['cpu_seconds_all']}" +
              (f"; datatrove {d['cpu_seconds_all']}" if d else ""))
    print(f"peak tree RSS per run, MB: synth {s['peak_tree_mb_all']}" +
          (f"; datatrove {d['peak_tree_mb_all']}" if d else ""))
    print(f"1-min load average before/after each run ({res['cpus']} CPUs): synth {s['load_avg_1min']}" +
          (f"; datatrove {d['load_avg_1min']}" if d else ""))
    print(f"synth time by stage (wall time of each shard's task, summed over shards, s): {s.get('worker_seconds')}")
    if d:
        print(f"datatrove wall time by stage (s): {d['stage_seconds']}")
        print(f"datatrove time by block (wall time, summed over tasks, s): {d['worker_seconds']}")

    ix = s.get("index", {})
    if ix.get("fragments"):
        per_m = 1e6 / ix["fragments"]
        print()
        print(f"synth dedup index: {ix['bands']} int64 band keys + an 8-byte exact hash = {ix['bands'] * 8 + 8} B a"
              f" fragment; measured on {ix['fragments']:,} fragments:")
        print(f"  decide()'s numpy arrays {ix['array_bytes'] * per_m / MB:,.0f} MB per million fragments"
              f" (Arrow column buffers {ix['arrow_bytes'] * per_m / MB:,.0f} MB);"
              f" find_duplicates() peak working memory on top (tracemalloc)"
              f" {ix['find_duplicates_peak_bytes'] * per_m / MB:,.0f} MB per million fragments")
    if d and d.get("index", {}).get("documents"):
        di = d["index"]
        print(f"datatrove MinHash signatures (on disk, sorted per bucket): "
              f"{di['signature_bytes'] * 1e6 / di['documents'] / MB:,.0f} MB per million documents")

    if "synth_scaled" in res:
        c4, s4 = res["corpus_scaled"], res["synth_scaled"]
        print()
        print(f"## synth peak memory against corpus size ({args.workers} workers)")
        print()
        print("| corpus | documents | fragments in dedup | wall time, s | CPU time, s | peak RSS tree, MB |"
              " largest process, MB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for c, r in ((c1, s), (c4, s4)):
            print(f"| {c['bytes'] / MB:.0f} MB ({c['shards']} shards) | {c['docs']:,} | "
                  f"{r.get('index', {}).get('fragments', 0):,} | {r['seconds']:.1f} | {r.get('cpu_seconds', 0):.1f} | "
                  f"{r['peak_tree_mb']:.0f} | {r['peak_process_mb']:.0f} |")
        grow = c4["bytes"] / c1["bytes"]
        print(f"{grow:.0f}× the corpus: peak tree RSS {s4['peak_tree_mb'] / s['peak_tree_mb']:.2f}×,"
              f" largest process {s4['peak_process_mb'] / s['peak_process_mb']:.2f}×")

    print()
    print("synth drops (fragments):", ", ".join(f"{k} {v:,}" for k, v in s["dropped"].items()))
    if d:
        print("datatrove drops (documents):", ", ".join(f"{k} {v:,}" for k, v in d["dropped"].items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=10, help="corpus size in MB (default 10)")
    p.add_argument("--scale", type=float, default=4,
                   help="also run synth on a corpus this many times larger, for memory (0: skip; default 4)")
    p.add_argument("--scale-repeats", type=int, default=1, help="runs on the larger corpus (default 1)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lang", default="sw", help="target language (default sw)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synth-lid", default="lid176",
                   help="synth's LID model (default lid176, the model datatrove gets; 'auto' may pick heliport)")
    p.add_argument("--shard-mb", type=float, default=2.5,
                   help="size of one input JSONL shard (default 2.5; smaller where needed for 2 shards a worker)")
    p.add_argument("--no-datatrove", action="store_true", help="run synth only")
    p.add_argument("--tmp", default=None, help="where the corpus and the run folders go (default: system tmp)")
    p.add_argument("--keep", action="store_true", help="keep the corpus and run folders")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    from synth.lang import canonical

    code3 = canonical(args.lang)
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-", dir=args.tmp))
    res: dict[str, Any] = {"args": vars(args), "python": sys.version.split()[0], "cpus": os.cpu_count()}
    try:
        t0 = time.perf_counter()
        # at least two shards a worker, so that both tools run their worker pools at every size
        shard_mb = min(args.shard_mb, args.mb / (2 * args.workers))
        corpus = make_corpus(tmp / "corpus", args.mb, code3, args.seed, shard_mb)
        print(f"corpus: {corpus['bytes'] / MB:.1f} MB, {corpus['docs']:,} documents, {corpus['shards']} shards "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        res["corpus"] = corpus
        tools = ["synth"] + ([] if args.no_datatrove else ["datatrove"])
        if not args.no_datatrove:
            from importlib.metadata import PackageNotFoundError, version

            try:
                res["datatrove_version"] = version("datatrove")
            except PackageNotFoundError as e:
                raise SystemExit('datatrove is not installed: pip install datatrove spacy fasteners orjson '
                                 '"xxhash<4", or pass --no-datatrove') from e
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
        for i in range(args.repeats):
            for tool in tools:  # interleaved, so drift in the machine affects both alike
                r = run_once(tool, corpus, args, tmp)
                runs[tool].append(r)
                print(f"run {i + 1}/{args.repeats} {tool}: {r['seconds']:.1f} s, peak tree "
                      f"{r['peak_tree_bytes'] / MB:.0f} MB", file=sys.stderr)
        for tool in tools:
            res[tool] = summarise(runs[tool], corpus)
        if args.scale and args.scale > 0:
            if not args.keep:
                shutil.rmtree(tmp / "corpus", ignore_errors=True)
            big = make_corpus(tmp / "corpus-scaled", args.mb * args.scale, code3, args.seed, shard_mb)
            res["corpus_scaled"] = big
            scaled = []
            for i in range(args.scale_repeats):
                r = run_once("synth", big, args, tmp)
                scaled.append(r)
                print(f"run {i + 1}/{args.scale_repeats} synth x{args.scale:g}: {r['seconds']:.1f} s, peak tree "
                      f"{r['peak_tree_bytes'] / MB:.0f} MB", file=sys.stderr)
            res["synth_scaled"] = summarise(scaled, big)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    report(res, args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if "--child" in sys.argv:
        run_child()
    else:
        main()
