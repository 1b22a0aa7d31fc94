"""The bundled trainer: supervised fine-tuning on exported datasets, and the English + multilingual mixer.

``synth.train.sft`` trains (LoRA or full) with TRL's ``SFTTrainer`` and picks checkpoints and learning rates on
multilingual validation loss; ``synth.train.mix`` builds a seeded mixture with exact per-language counts. Heavy
libraries (torch, transformers, trl, peft) are imported inside the functions that need them.
"""

from synth.train.mix import MixReport, mix
from synth.train.sft import SweepReport, TrainReport, load_sft_dataset, lr_sweep, train

__all__ = ["MixReport", "SweepReport", "TrainReport", "load_sft_dataset", "lr_sweep", "mix", "train"]
