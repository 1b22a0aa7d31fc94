"""Translation by a seq2seq MT model (NLLB-200, M2M100, MADLAD-400, Marian) through ``synth.mt_models``.

Texts are grouped by direction; ``Seq2SeqTranslator`` splits long ones into pieces of ``mt_max_input_tokens``.
Each direction's model is named by its own setting (``Direction.mt_model``, unset: ``mt_model``); one loaded
model serves both directions when they name the same one.
"""

from __future__ import annotations

from typing import Any

from synth import checks as ck
from synth.devices import Gpu, Placement, parse_gpus
from synth.identity import identity
from synth.mt_models import Seq2SeqTranslator
from synth.stats import ShardStats
from synth.translate import FORWARD, BatchTranslator, Direction, TranslateError, Translation

SHARED = ("mt_family", "mt_num_beams", "mt_max_input_tokens", "mt_max_new_tokens")  # both directions use them


class Seq2SeqBackend(BatchTranslator):
    # Not ``roundtrip_mt_model``: that one is Backtranslate's own setting, in its fingerprint whatever the
    # translator; the round trip of this backend puts the model's identity in its place.
    FIELDS = frozenset({"mt_model", "mt_revision", "mt_options", *SHARED})

    def __init__(self, settings: Any, directions: tuple[Direction, ...] = (FORWARD,), engine: Any = None) -> None:
        if not settings.mt_model:
            raise TranslateError("translator 'seq2seq' needs mt_model (a directory or a hub name such as "
                                 "facebook/nllb-200-distilled-600M)")
        super().__init__(settings, directions, engine)
        self._models: dict[str, Seq2SeqTranslator] = {}

    def model(self, direction: Direction) -> str:
        """The model of ``direction``: its own setting, else ``mt_model``."""
        return getattr(self.settings, direction.mt_model) or self.settings.mt_model

    def params(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Each direction's model by its identity (under that direction's setting), and the decoding settings."""
        s = self.settings
        return {**{k: getattr(s, k) for k in SHARED},
                **{d.mt_model: identity(self.model(d), s.mt_revision) for d in self.directions}}

    def placement(self) -> Placement:
        """One GPU per copy (the model's device), none when ``mt_options`` put it on the CPU."""
        s = self.settings
        device = str(s.mt_options.get("device") or "auto")
        return Placement(0 if device.startswith(("cpu", "mps")) else 1, s.replicas, parse_gpus(s.gpus))

    def facts(self, gpus: list[Gpu]) -> dict[str, Any]:
        return {}

    def setup(self) -> None:
        s = self.settings
        for name in {self.model(d) for d in self.directions} - set(self._models):
            self._models[name] = Seq2SeqTranslator(
                name, revision=s.mt_revision, family=s.mt_family, num_beams=s.mt_num_beams,
                max_input_tokens=s.mt_max_input_tokens, max_new_tokens=s.mt_max_new_tokens, **s.mt_options)

    def close(self) -> None:
        for mt in self._models.values():
            mt.close()
        self._models = {}

    def run(self, texts: list[str], src_langs: list[str], tgt_langs: list[str], direction: Direction,
            stats: ShardStats) -> list[Translation]:
        mt = self._models[self.model(direction)]
        out: list[Translation] = [("", ck.EMPTY)] * len(texts)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (s, t) in enumerate(zip(src_langs, tgt_langs, strict=True)):
            groups.setdefault((s, t), []).append(i)
        for (src, tgt), idx in groups.items():
            for i, res in zip(idx, mt.translate([texts[i] for i in idx], src, tgt), strict=True):
                stats.count("mt_input_tokens", res.input_tokens)
                stats.count("mt_output_tokens", res.output_tokens)
                out[i] = ck.result_problem(res.text, res.finish_reason, None, self.settings.checks)
        return out
