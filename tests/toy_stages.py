"""Small stages for testing the runner (importable by spawned worker processes)."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field

import pyarrow as pa

from synth import ShardStats, Stage
from synth.config import option
from synth.fingerprint import stable_id
from synth.kernel import TableSource


@dataclass
class Upper(Stage):
    """Upper-cases ``text``; drops rows containing ``drop_word`` under the reason ``contains_drop_word``."""

    key = "01_toy"
    drop_word: str = "bad"
    sleep: float = field(default=0.0, metadata={"fingerprint": False})
    fail_on: str | None = field(default=None, metadata={"fingerprint": False})

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        time.sleep(self.sleep)
        texts = batch.column("text").to_pylist()
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot handle {self.fail_on!r}")
        batch = stats.drop_mask(batch, [self.drop_word in t for t in texts], "contains_drop_word")
        stats.count("chars", sum(len(t) for t in batch.column("text").to_pylist()))
        return batch.append_column("upper", pa.array([t.upper() for t in batch.column("text").to_pylist()]))


@dataclass
class LookAhead(Upper):
    """``Upper`` through its own ``process_stream`` that holds ``lag`` batches back before it processes one, as
    an LLM stage keeps later batches in flight: batch outputs come out long after their shard was read."""

    key = "01_toy"  # the same rows and fingerprint as Upper: only how batches flow differs
    lag: int = field(default=10, metadata={"fingerprint": False})

    def process_stream(self, batches):
        held = deque()
        for item in batches:
            held.append(item)
            if len(held) > self.lag:
                yield self.process(*held.popleft())
        while held:
            yield self.process(*held.popleft())


@dataclass
class Pinned(Upper):
    """``Upper`` as a stage with model copies (``placement``, as ``LLMStage`` has: ``per_copy`` GPUs each):
    each row records the process, host and ``CUDA_VISIBLE_DEVICES`` it was made under."""

    key = "01_toy"
    replicas: int | str = field(default="auto", metadata={"fingerprint": False})
    gpus: str = field(default="", metadata={"fingerprint": False})
    per_copy: int = field(default=1, metadata={"fingerprint": False})

    def placement(self):
        from synth.devices import Placement, parse_gpus

        return Placement(self.per_copy, self.replicas, parse_gpus(self.gpus))

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        out = super().process(batch, stats)
        where = f"{os.getpid()}:{os.environ.get('CUDA_VISIBLE_DEVICES', '')}"
        return out.append_column("made_by", pa.array([where] * out.num_rows, pa.string()))


@dataclass
class Length(Stage):
    """A second stage, to chain after ``Upper``."""

    key = "02_length"

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        return batch.append_column("n", pa.array([len(t) for t in batch.column("upper").to_pylist()]))


def toy_table(n: int = 400) -> pa.Table:
    langs = ["sw", "en", "yo", "sw"]
    texts = [f"row {i} {'bad' if i % 7 == 0 else 'good'} text" for i in range(n)]
    return pa.table({
        "id": [stable_id("toy", i) for i in range(n)],
        "lang": [langs[i % 4] for i in range(n)],
        "text": texts,
    })


def toy_source(n: int = 400, rows_per_shard: int = 50) -> TableSource:
    return TableSource(toy_table(n), rows_per_shard=rows_per_shard)


@dataclass
class Words(Stage):
    """A stage added to the pipeline by one registry line (``tests/test_registry.py``): counts the words of
    each native response and drops the rows with fewer than ``min_words``."""

    key = "05_words"
    min_words: int = option(0, "Fewest words a native response may have.", also=("run",))

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        words = [len(t.split()) for t in batch.column("fragment").to_pylist()]
        stats.count("words", sum(words))
        kept = [n for n in words if n >= self.min_words]
        batch = stats.drop_mask(batch, [n < self.min_words for n in words], "too_few_words")
        return batch.append_column("words", pa.array(kept, pa.int32()))
