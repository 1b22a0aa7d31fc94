"""A cap on a run's work, in tokens: ``--max-budget 2M`` (``max_budget`` in run.toml).

The spend is what ``synth plan`` projects and ``stats.json`` counts: the prompt and completion tokens of every LLM
request and the input and output tokens of a seq2seq MT model, cached answers included (they measure the work the
rows need, so a resumed run counts what it counted before and stops at the same place under the same cap). The
spend so far is every other stage's in ``stats.json`` plus this stage's finished shards. When a stage starts and
after each shard it commits, the runner asks whether the spend so far plus one more shard at this stage's pace
would pass the cap; if so the stage stops cleanly: the shards committed stay (the answers of those in flight are
in the request cache), and the same command with a larger cap resumes where it stopped, to the same rows as an
uncapped run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.errors import SynthError

TOKEN_COUNTERS = ("prompt_tokens", "completion_tokens", "mt_input_tokens", "mt_output_tokens")


class BudgetExceeded(SynthError):
    """The run stopped at its cap; the message says what was spent, what is committed, and how to go on."""


def tokens(stats: dict[str, Any]) -> int:
    """Tokens in one shard's or one stage's stats (``counters``)."""
    counters = stats.get("counters", {})
    return int(sum(counters.get(k, 0) for k in TOKEN_COUNTERS))


@dataclass
class Budget:
    """At most ``max_tokens`` of work in a run directory."""

    max_tokens: int

    def __post_init__(self) -> None:
        if self.max_tokens <= 0:
            raise ValueError(f"--max-budget must be a positive number of tokens, not {self.max_tokens}")

    def spent_before(self, rundir: Path, key: str) -> int:
        """Tokens of the run's other stages, from ``stats.json`` (this stage's are counted from its shards)."""
        try:
            stages = json.loads((Path(rundir) / "stats.json").read_text()).get("stages", {})
        except (OSError, ValueError):
            return 0
        return sum(tokens(s) for k, s in stages.items() if k != key)

    def meter(self, rundir: Path, key: str, finished: list[dict[str, Any]], total: int) -> Meter:
        own = sum(tokens(m["stats"]) for m in finished)
        return Meter(self, key, self.spent_before(rundir, key) + own, len(finished), total, own)


@dataclass
class Meter:
    """One stage's spend against the run's budget, shard by shard."""

    budget: Budget
    key: str
    spent: int  # the run's, this stage's finished shards included
    done: int  # this stage's shards committed
    total: int
    own: int  # this stage's tokens so far: its pace is own / done

    def check(self) -> None:
        """Stop if the spend so far, plus one more shard at this stage's pace, would pass the cap."""
        if self.done >= self.total:
            return
        pace = self.own / self.done if self.done else 0
        if self.spent >= self.budget.max_tokens or self.spent + pace > self.budget.max_tokens:
            ahead = f" (the next shard takes about {pace:,.0f} at this stage's pace)" if pace else ""
            raise BudgetExceeded(
                f"budget reached at stage {self.key}: {self.spent:,} tokens spent of --max-budget "
                f"{self.budget.max_tokens:,}{ahead}; {self.done} of {self.total} shards of {self.key} are "
                "committed. Run the same command with a larger --max-budget to go on from there (nothing done is "
                "done again)")

    def add(self, meta: dict[str, Any]) -> None:
        spent = tokens(meta["stats"])
        self.spent += spent
        self.own += spent
        self.done += 1


_current: list[Budget] = []


@contextmanager
def spending(max_tokens: int | None) -> Iterator[Budget | None]:
    """The run's cap for the stages run inside (none: ``max_tokens`` None)."""
    if max_tokens is None:
        yield None
        return
    _current.append(Budget(int(max_tokens)))
    try:
        yield _current[-1]
    finally:
        _current.pop()


def current_budget() -> Budget | None:
    return _current[-1] if _current else None
