"""Decide, then apply: how a stage says which rows fail, and what happens to them.

A reason per row, or None, is the one currency. It comes from a list of checks (``Check``: a reason, a function,
the setting it reads; the first that fails names the row, as in ``quality.CHECKS`` and datatrove's
``BaseFilter.filter``) or from a decision taken once over all rows (extract's thresholds, dedup and sampling;
select's ranking). A ``Gate`` applies the reasons shard by shard: a failing row either leaves, counted as a drop
(extract's decide, the fidelity gate), or stays with its reason, counted as marked (select). A new check is one
function and one line in its stage's check list; a new global step is a ``Gate`` with a ``decision``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from synth.kernel import Stage
from synth.stats import ShardStats


@dataclass(frozen=True)
class Check:
    """One line of a stage's check list: ``fails(item, settings)`` is true when the item must go under
    ``reason``. ``setting`` names the settings field that tunes it (its threshold; None when nothing does)."""

    reason: str
    fails: Callable[[Any, Any], bool]
    setting: str | None = None


def first_failure(checks: Sequence[Check], item: Any, settings: Any) -> str | None:
    """The reason of the first check ``item`` fails, in list order, or None when it passes them all."""
    for check in checks:
        if check.fails(item, settings):
            return check.reason
    return None


class Gate(Stage):
    """A stage that applies reasons: ``decide`` gives each row of a batch its reason (None: it passes), by
    default from ``decision()`` (row id → reason, taken once over all rows); ``finish`` shapes what goes out.
    With ``marks`` false a failing row leaves (a drop); with ``marks`` true it stays and is counted as marked."""

    marks: ClassVar[bool] = False

    def decision(self) -> Mapping[str, str]:
        """The reason of every failing row by id (passing rows are absent)."""
        raise NotImplementedError

    def decide(self, batch: pa.Table) -> list[str | None]:
        decided = self.decision()
        return [decided.get(i) for i in batch.column("id").to_pylist()]

    def finish(self, batch: pa.Table, reasons: list[str | None], stats: ShardStats) -> pa.Table:
        """The output batch from the rows that go out and their reasons (all None unless ``marks``)."""
        return batch

    def process(self, batch: pa.Table, stats: ShardStats) -> pa.Table:
        reasons = self.decide(batch)
        if self.marks:
            stats.mark_reasons(batch, reasons)
            return self.finish(batch, reasons, stats)
        batch, kept = stats.drop_reasons(batch, reasons)
        return self.finish(batch, [None] * len(kept), stats)
