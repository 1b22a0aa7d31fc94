"""A stage whose requests fail for reasons outside them (the server is down) stops without writing the shard,
so the rows are not lost as drops: the same command, once the server is back, does them."""

from __future__ import annotations

import socket

import pyarrow as pa
import pytest

from synth.kernel import StageError, TableSource
from synth.runner import run_stage
from synth.stages.score import Score


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the with-block ends: connections are refused


def test_server_down_fails_the_shard_instead_of_dropping_rows(tmp_path):
    table = pa.table({"id": ["a", "b"], "lang": ["swh", "swh"], "instruction_en": ["Why?", "How?"],
                      "response_en": ["Because.", "Like this."]})
    stage = Score(engine="openai", model="judge", cache=str(tmp_path / "c.sqlite"),
                  engine_options={"base_url": f"http://127.0.0.1:{_closed_port()}/v1", "max_retries": 1,
                                  "backoff": 0.01, "timeout": 2.0})
    with pytest.raises(StageError, match=r"2 of 2 requests failed for reasons outside them \(connection_error"):
        run_stage(stage, TableSource(table), tmp_path / "run", progress=False)
    out_dir = next((tmp_path / "run" / "04_score").iterdir())
    assert not list(out_dir.glob("part-*.parquet"))  # nothing committed: a rerun does these rows
    assert not (tmp_path / "run" / "04_score" / "CURRENT").exists()
