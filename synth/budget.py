"""A cap on a run's work: ``--max-budget 2M`` (tokens), ``--max-budget 3gpu-h`` (GPU-hours) or ``--max-budget
40USD`` (money; ``max_budget`` in run.toml).

The spend is what ``synth plan`` projects and ``stats.json`` counts: the prompt and completion tokens of every LLM
request and the input and output tokens of a seq2seq MT model, cached answers included (they measure the work the
rows need, so a resumed run counts what it counted before and stops at the same place under the same cap).
GPU-hours and money are those tokens as ``synth plan`` prices them (``Budget.cost``, made from run.toml's
``[plan]`` by ``synth.orchestrate``): through a GPU profile's prefill and decode tokens/s, then a GPU-hour's price
or a hosted API's price per million tokens, so the cap is as reproducible as the tokens are. The
spend so far is every other stage's in ``stats.json`` plus this stage's finished shards. When a stage starts and
after each shard it commits, the runner asks whether the spend so far plus one more shard at this stage's pace
would pass the cap; if so the stage stops cleanly: the shards committed stay (the answers of those in flight are
in the request cache), and the same command with a larger cap resumes where it stopped, to the same rows as an
uncapped run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


TOKENS, GPU_HOURS = "tokens", "GPU-hours"


@dataclass
class Budget:
    """At most ``limit`` of work in a run directory, in ``unit``; ``cost`` turns one shard's or stage's stats into
    that unit (default: its tokens), ``basis`` says how, for the stop message."""

    limit: float
    unit: str = TOKENS
    cost: Callable[[dict[str, Any]], float] = field(default=tokens)
    basis: str = ""

    def __post_init__(self) -> None:
        if self.limit <= 0:
            raise ValueError(f"--max-budget must be positive, not {self.limit}")

    def show(self, amount: float) -> str:
        if self.unit == TOKENS:
            return f"{amount:,.0f} tokens"
        number = f"{amount:,.2f}" if amount >= 100 else f"{amount:.4g}"
        return f"{number} {self.unit}"

    def spent_before(self, rundir: Path, key: str) -> float:
        """The spend of the run's other stages, from ``stats.json`` (this stage's is counted from its shards)."""
        try:
            stages = json.loads((Path(rundir) / "stats.json").read_text()).get("stages", {})
        except (OSError, ValueError):
            return 0
        return sum(self.cost(s) for k, s in stages.items() if k != key)

    def meter(self, rundir: Path, key: str, finished: list[dict[str, Any]], total: int) -> Meter:
        own = sum(self.cost(m["stats"]) for m in finished)
        return Meter(self, key, self.spent_before(rundir, key) + own, len(finished), total, own)


@dataclass
class Meter:
    """One stage's spend against the run's budget, shard by shard."""

    budget: Budget
    key: str
    spent: float  # the run's, this stage's finished shards included
    done: int  # this stage's shards committed
    total: int
    own: float  # this stage's spend so far: its pace is own / done

    def check(self) -> None:
        """Stop if the spend so far, plus one more shard at this stage's pace, would pass the cap."""
        if self.done >= self.total:
            return
        b = self.budget
        pace = self.own / self.done if self.done else 0
        if self.spent >= b.limit or self.spent + pace > b.limit:
            ahead = f" (the next shard takes about {b.show(pace)} at this stage's pace)" if pace else ""
            basis = f" ({b.basis})" if b.basis else ""
            raise BudgetExceeded(
                f"budget reached at stage {self.key}: {b.show(self.spent)} spent of --max-budget "
                f"{b.show(b.limit)}{basis}{ahead}; {self.done} of {self.total} shards of {self.key} are "
                "committed. Run the same command with a larger --max-budget to go on from there (nothing done is "
                "done again)")

    def add(self, meta: dict[str, Any]) -> None:
        spent = self.budget.cost(meta["stats"])
        self.spent += spent
        self.own += spent
        self.done += 1


_current: list[Budget] = []


@contextmanager
def spending(budget: Budget | int | None) -> Iterator[Budget | None]:
    """The run's cap for the stages run inside: a ``Budget``, a number of tokens, or None (no cap)."""
    if budget is None:
        yield None
        return
    _current.append(budget if isinstance(budget, Budget) else Budget(int(budget)))
    try:
        yield _current[-1]
    finally:
        _current.pop()


def current_budget() -> Budget | None:
    return _current[-1] if _current else None
