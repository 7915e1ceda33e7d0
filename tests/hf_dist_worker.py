"""SiftTrainer worker for tests/test_hf_distributed.py: one process, or one rank under torchrun (gloo DDP, or
DeepSpeed ZeRO through ``TrainingArguments(deepspeed=...)``). Deterministic pre-masked data, micro BERT, fp32.

Writes ``OUT/result.json`` on rank 0: the logged loss per step, the SIFT log fields and the ranks' kept counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=["single", "ddp", "z2", "z3"], default="single")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--ga", type=int, default=1)
    p.add_argument("--cache", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    import test_hf_trainer as th
    import transformers as T

    from sift_fast.data import BUNDLED_CORPUS
    from sift_fast.data.tokenizer import hf_tokenizer
    from sift_fast.distributed.launch import shutdown
    from sift_fast.hf import SiftArguments, SiftTrainer

    text = BUNDLED_CORPUS.read_text(encoding="utf-8")[:150_000]
    tok = hf_tokenizer("train", train_texts=text.splitlines(), vocab_size=512, cache_dir=a.cache)
    lines = [ln for ln in text[:200_000].splitlines() if len(ln) > 60][:256]
    data = th.premasked(tok, th.examples(tok, lines, n=256))
    ds = None
    if a.mode in ("z2", "z3"):
        ds = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
              "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "zero_force_ds_cpu_optimizer": False,
              "zero_optimization": {"stage": int(a.mode[1])}, "bf16": {"enabled": False}, "fp16": {"enabled": False}}
    args = th.targs(Path(a.out), max_steps=a.steps, gradient_accumulation_steps=a.ga, deepspeed=ds,
                    ddp_backend="gloo" if a.mode != "single" else None, learning_rate=3e-3)
    tr = SiftTrainer(model=th.micro_model(tok), args=args, train_dataset=data,
                     data_collator=T.DataCollatorForTokenClassification(tok),
                     sift_args=SiftArguments(selection="loss", keep=0.5, exit_layer="1",
                                             select_until=1.0))
    tr.train()
    if tr.args.process_index == 0:
        logs = [h for h in tr.state.log_history if "loss" in h]
        res = {"loss": {h["step"]: h["loss"] for h in logs}, "world": tr.args.world_size,
               "backprop_samples": logs[-1]["sift/backprop_samples"], "env_rank": os.environ.get("RANK")}
        (Path(a.out) / "result.json").write_text(json.dumps(res))
    del tr  # its DDP reducer holds gloo work: dropped while Python is fully alive (see shutdown)
    shutdown()


if __name__ == "__main__":
    main()
