"""Validation: MLM accuracy and loss on the fixed-masking validation batches."""

from __future__ import annotations

import contextlib

import torch

from sift_fast.models.hf import MLMEncoder, eval_mode


@torch.no_grad()
def evaluate(model: MLMEncoder, batches: list, device: torch.device,
             autocast: contextlib.AbstractContextManager | None = None) -> dict[str, float]:
    """Token-level MLM accuracy and mean cross-entropy over all masked positions."""
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_correct = torch.zeros((), dtype=torch.int64, device=device)
    total_rows = 0
    with eval_mode([model]):
        for batch in batches:
            if batch.masked_index.numel() == 0:
                continue
            b = batch.to(device, non_blocking=True)
            with autocast or contextlib.nullcontext():
                out = model(b.input_ids, b.model_attention_mask, b.masked_index, b.masked_targets)
            total_loss += out.loss.double() * out.num_rows
            total_correct += out.num_correct
            total_rows += out.num_rows
    if total_rows == 0:
        return {"val_mlm_acc": 0.0, "val_loss": float("nan")}
    return {"val_mlm_acc": total_correct.item() / total_rows, "val_loss": total_loss.item() / total_rows}
