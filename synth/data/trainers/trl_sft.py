"""Fine-tune a model on the synth export "$name" with TRL's SFTTrainer, on a GPU or a CPU.

    python trainers/trl_sft.py --model PATH_OR_HUB_ID [--lora] [--max-steps N] [--output-dir DIR]

It reads the Parquet shards in ../data beside this folder, so it runs from any directory, in the export or in a
copy of its Hub repo. Only the answer is trained (prompt-completion form, any chat template). The precision follows
the machine: bf16 where the GPU has it, else fp16 on a GPU, fp32 on a CPU. Written by synth $version for the export
$fingerprint.
"""

import argparse
from pathlib import Path

import torch
from datasets import load_dataset
from trl import SFTConfig, SFTTrainer

DATA = Path(__file__).resolve().parent.parent / "data"


def precision() -> dict:
    """What this machine computes in (TRL would turn bf16 on and stop on a CPU)."""
    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16}
    return {"bf16": False, "fp16": False, "use_cpu": True}


def load_rows():
    """The export's rows in prompt-completion form: TRL then trains on the completion (the answer) only."""
    files = sorted(str(p) for p in DATA.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no Parquet shards in {DATA}: this script belongs in the trainers/ folder of an export")
    dataset = load_dataset("parquet", data_files=files, split="train")
    return dataset.map(lambda row: {"prompt": row["messages"][:1], "completion": row["messages"][1:]},
                       remove_columns=dataset.column_names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a local model directory or a Hub id")
    ap.add_argument("--lora", action="store_true", help="train a LoRA adapter (needs peft) instead of every weight")
    ap.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (default: one epoch)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=1024, help="tokens per example; longer ones are cut")
    ap.add_argument("--learning-rate", type=float, default=None, help="default 2e-5, or 2e-4 with --lora")
    ap.add_argument("--output-dir", default="sft-$slug")
    ap.add_argument("--report-to", default="none", help="tensorboard, wandb, ... (default: none)")
    args = ap.parse_args()

    dataset = load_rows()
    peft_config = None
    if args.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    lr = args.learning_rate or (2e-4 if args.lora else 2e-5)
    config = SFTConfig(output_dir=args.output_dir, num_train_epochs=args.epochs, max_steps=args.max_steps,
                       per_device_train_batch_size=args.batch_size, max_length=args.max_length, learning_rate=lr,
                       logging_steps=1, save_strategy="no", report_to=args.report_to, **precision())
    trainer = SFTTrainer(model=args.model, train_dataset=dataset, args=config, peft_config=peft_config)
    result = trainer.train()
    trainer.save_model(args.output_dir)
    print(f"trained {result.global_step} steps on {len(dataset)} rows, loss {result.training_loss:.4f}: "
          f"{args.output_dir}")


if __name__ == "__main__":
    main()
