"""Translation by a seq2seq MT model (NLLB-200, M2M100, MADLAD-400, Marian) through ``synth.mt``.

Texts are grouped by direction; ``Seq2SeqTranslator`` splits long ones into pieces of ``mt_max_input_tokens``.
The models a stage loads live on the stage (``_mt_models``), so the round trip reuses the forward model when
both directions name the same one, as the LLM backend reuses the stage's engine.
"""

from __future__ import annotations

from typing import Any

from synth import checks as ck
from synth.devices import Gpu, Placement, parse_gpus
from synth.identity import identity
from synth.mt import Seq2SeqTranslator
from synth.stats import ShardStats
from synth.translate import FORWARD, Direction, TranslateError, Translation

SHARED = ("mt_family", "mt_num_beams", "mt_max_input_tokens", "mt_max_new_tokens")  # both directions use them


class Seq2SeqBackend:
    # Not ``roundtrip_mt_model``: that one is Backtranslate's own setting, in its fingerprint whatever the
    # translator; the round trip of this backend puts the model's identity in its place.
    FIELDS = frozenset({"mt_model", "mt_revision", "mt_options", *SHARED})
    STREAMS = False  # a batch at a time (translate)

    def __init__(self, stage: Any, direction: Direction = FORWARD) -> None:
        if not stage.mt_model:
            raise TranslateError("translator 'seq2seq' needs mt_model (a directory or a hub name such as "
                                 "facebook/nllb-200-distilled-600M)")
        self.stage = stage
        self.direction = direction
        self.model: str = getattr(stage, direction.mt_model) or stage.mt_model

    def params(self) -> dict[str, Any]:
        """The model by its identity (under this direction's setting) and the decoding settings."""
        return {**{k: getattr(self.stage, k) for k in SHARED},
                self.direction.mt_model: identity(self.model, self.stage.mt_revision)}

    def placement(self) -> Placement:
        """One GPU per copy (the model's device), none when ``mt_options`` put it on the CPU."""
        device = str(self.stage.mt_options.get("device") or "auto")
        return Placement(0 if device.startswith(("cpu", "mps")) else 1, self.stage.replicas,
                         parse_gpus(self.stage.gpus))

    def facts(self, gpus: list[Gpu]) -> dict[str, Any]:
        return {}

    def setup(self) -> None:
        s = self.stage
        models = s.__dict__.setdefault("_mt_models", {})
        if self.model not in models:
            models[self.model] = Seq2SeqTranslator(
                self.model, revision=s.mt_revision, family=s.mt_family, num_beams=s.mt_num_beams,
                max_input_tokens=s.mt_max_input_tokens, max_new_tokens=s.mt_max_new_tokens, **s.mt_options)
        self._mt = models[self.model]

    def close(self) -> None:
        for mt in self.stage.__dict__.pop("_mt_models", {}).values():
            mt.close()

    def translate(self, texts: list[str], src_langs: list[str], tgt_langs: list[str], ids: list[str],
                  stats: ShardStats) -> list[Translation]:
        out: list[Translation] = [("", ck.EMPTY)] * len(texts)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (s, t) in enumerate(zip(src_langs, tgt_langs, strict=True)):
            groups.setdefault((s, t), []).append(i)
        for (src, tgt), idx in groups.items():
            for i, res in zip(idx, self._mt.translate([texts[i] for i in idx], src, tgt), strict=True):
                stats.count("mt_input_tokens", res.input_tokens)
                stats.count("mt_output_tokens", res.output_tokens)
                out[i] = ck.result_problem(res.text, res.finish_reason, None, self.stage.checks)
        return out
