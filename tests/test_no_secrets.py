"""Secrets never reach the disk: a token in the engine options and a password in the server URL are planted,
a real stage runs (the openai engine against a local server), and the whole run directory, the request cache
and the logs are searched for them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pyarrow as pa
import pytest
from llm_server import FaultProxy, Reply, chat_completion

from synth.config import write_run_config
from synth.kernel import TableSource
from synth.llm.factory import EngineOptionError
from synth.redact import is_secret_name, redact, redact_url
from synth.report import write_report
from synth.runner import run_stage
from synth.stages.score import Score

ROWS = pa.table({"id": ["r0", "r1"], "lang": ["swh", "swh"], "instruction_en": ["Say hi.", "Name a river."],
                 "response_en": ["Hi!", "The Nile."]})


def files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_planted_secrets_reach_no_file_and_no_log(tmp_path, caplog, capfd):
    password, token = "pw-" + os.urandom(6).hex(), "hf_" + os.urandom(6).hex()
    caplog.set_level(logging.DEBUG)
    with FaultProxy(behaviour=lambda c: Reply(body=chat_completion('{"score": 4, "reason": "fine"}'))) as proxy:
        base_url = f"http://user:{password}@127.0.0.1:{proxy.port}/v1"
        options = {"base_url": base_url, "dtype": "float32", "max_retries": 0}
        rundir, cache = tmp_path / "run", tmp_path / "cache" / "requests.sqlite"
        write_run_config(rundir, {"score": {"engine": "openai", "engine_options": {**options, "hf_token": token},
                                            "cache": str(cache)}})
        out = run_stage(Score(engine="openai", model="m", engine_options=options, cache=str(cache)),
                        TableSource(ROWS), rundir, progress=False)
        assert proxy.calls, "the stage did not reach the server"
    assert out.read().column("quality").to_pylist() == [4, 4]
    assert "base_url" in out.manifest["params"]["engine_options"]  # the server is named, without its password
    # A token given to an engine that takes none: one line naming the option, never its value.
    with pytest.raises(EngineOptionError, match="does not take the option hf_token; it takes: revision") as e:
        run_stage(Score(engine="hf", model="smollm2", engine_options={"hf_token": token}, cache=str(cache)),
                  TableSource(ROWS), rundir, progress=False)
    assert token not in str(e.value)
    write_report(rundir)
    said = capfd.readouterr()
    assert (rundir / "run.toml").exists() and (rundir / "report.html").exists() and cache.exists()
    for secret in (password, token):
        assert files_holding(tmp_path, secret) == []
        assert secret not in caplog.text and secret not in said.out and secret not in said.err
    assert "<redacted>" in (rundir / "run.toml").read_text()


def test_what_counts_as_a_secret():
    assert all(map(is_secret_name, ["hf_token", "api_key", "secretAccessKey", "password", "HF_TOKEN", "apiKey"]))
    assert not any(map(is_secret_name, ["max_tokens", "tokenizer", "max_input_tokens", "api_key_env", "keep"]))
    assert redact_url("https://u:p@h:8000/v1?key=abc&x=1") == "https://<redacted>@h:8000/v1?key=<redacted>&x=1"
    assert redact_url("http://h/v1?a=1&b=%2F") == "http://h/v1?a=1&b=%2F"  # nothing to hide: unchanged
    assert redact({"opts": {"token": "t", "batch_size": 4}, "urls": ["http://a:b@h"]}) == {
        "opts": {"token": "<redacted>", "batch_size": 4}, "urls": ["http://<redacted>@h"]}
