"""A toy stage for the Ray executor's fault tests (importable by the cluster's worker processes)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from synth import ShardStats, Stage


@dataclass
class Slow(Stage):
    """Appends ``n`` (the text's length); on each batch writes its process id into ``pid_dir`` (a file named by
    the pid) and then sleeps ``sleep`` seconds, so a test can find the worker running a shard and kill it."""

    key = "01_slow"
    pid_dir: str = field(default="", metadata={"fingerprint": False})
    sleep: float = field(default=0.0, metadata={"fingerprint": False})
    on_actor: bool = field(default=False, metadata={"fingerprint": False})  # as a stage that holds a model

    def placement(self):
        from synth.devices import Placement

        return Placement(per_copy=0) if self.on_actor else None

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        if self.pid_dir:
            Path(self.pid_dir, str(os.getpid())).touch()
        time.sleep(self.sleep)
        stats.count("rows_seen", batch.num_rows)
        return batch.append_column("n", pa.array([len(t) for t in batch.column("text").to_pylist()], pa.int32()))
