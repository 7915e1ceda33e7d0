"""Adapters over Hugging Face encoders: a training forward with the MLM head on masked rows only,
and an early exit (embeddings + first k layers, no grad) for the scoring pass.

``MLMEncoder`` is an ``nn.Module`` so an engine (plain PyTorch, DeepSpeed) wraps it unchanged. Other
encoders fit by a small subclass that names the backbone, layers and head pieces (see ``RobertaMLM``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from sift_fast.config import ModelConfig


@dataclass
class MLMOutput:
    loss: torch.Tensor  # mean cross-entropy over the masked rows (weighted sum with row weights)
    num_correct: torch.Tensor  # argmax == target over the masked rows (no grad)
    num_rows: int


@contextlib.contextmanager
def eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Temporarily put ``modules`` in eval mode (dropout off), restoring each module's flag after."""
    saved = [(m, m.training) for mod in modules for m in mod.modules()]
    for m, _ in saved:
        m.training = False
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


class MLMEncoder(nn.Module):
    """BERT-style masked-LM encoder: ``hf.bert`` backbone + ``hf.cls.predictions`` head."""

    backbone_attr = "bert"

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    # --- the pieces a subclass names -------------------------------------------------------------
    @property
    def backbone(self) -> nn.Module:
        return getattr(self.hf, self.backbone_attr)

    @property
    def embeddings(self) -> nn.Module:
        return self.backbone.embeddings

    @property
    def layers(self) -> nn.ModuleList:
        return self.backbone.encoder.layer

    @property
    def head_transform(self) -> nn.Module:
        """Dense + activation + LayerNorm before the decoder."""
        return self.hf.cls.predictions.transform

    @property
    def decoder(self) -> nn.Linear:
        return self.hf.cls.predictions.decoder

    # ---------------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def decoder_params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        dec = self.decoder
        return dec.weight, dec.bias

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embedding output and the attention mask in the form the layers take (``None``: no padding).

        ``token_type_ids`` None: the embedding's default (all segment 0), as the HF model does.
        """
        h = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = create_bidirectional_mask(config=self.hf.config, inputs_embeds=h, attention_mask=attention_mask)
        return h, mask

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, num_layers: int | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden state after the first ``num_layers`` layers (all by default)."""
        h, mask = self.embed(input_ids, attention_mask, token_type_ids)
        for layer in self.layers[: self.num_layers if num_layers is None else num_layers]:
            h = layer(h, attention_mask=mask)
        return h

    def logits_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """MLM logits of gathered rows ``[N, H]`` (head transform + decoder)."""
        return self.decoder(self.head_transform(rows))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        masked_index: torch.Tensor,
        masked_targets: torch.Tensor,
        row_weight: torch.Tensor | None = None,
    ) -> MLMOutput:
        """Full forward; the head runs only on the ``masked_index`` rows of the flattened ``[B*S]``.

        The loss is the mean cross-entropy over those rows, or ``Σ row_weight · CE`` when weights are given.
        """
        h = self.encode(input_ids, attention_mask)
        rows = h.reshape(-1, h.shape[-1]).index_select(0, masked_index)
        logits = self.logits_rows(rows).float()
        if row_weight is None:
            loss = nn.functional.cross_entropy(logits, masked_targets)
        else:
            loss = (nn.functional.cross_entropy(logits, masked_targets, reduction="none") * row_weight).sum()
        with torch.no_grad():
            correct = (logits.argmax(-1) == masked_targets).sum()
        return MLMOutput(loss=loss, num_correct=correct, num_rows=int(masked_index.numel()))

    @torch.no_grad()
    def exit_hidden(self, batch, k: int) -> torch.Tensor:
        """Embeddings + the first ``k`` layers in eval mode under no_grad: ``[B, S, H]``.

        Applying the head to it equals the full model's head on ``output_hidden_states[k]``.
        """
        if not 1 <= k <= self.num_layers:
            raise ValueError(f"exit layer must be in [1, {self.num_layers}], got {k}")
        with eval_mode([self.embeddings, *self.layers[:k]]):
            mask = getattr(batch, "model_attention_mask", batch.attention_mask)
            return self.encode(batch.input_ids, mask, num_layers=k,
                               token_type_ids=getattr(batch, "token_type_ids", None))

    @torch.no_grad()
    def exit_rows(self, batch, k: int, index: torch.Tensor) -> torch.Tensor:
        """Head-transformed exit hidden state at flat positions ``index`` of ``[B*S]``: ``[N, H]``."""
        h = self.exit_hidden(batch, k)
        rows = h.reshape(-1, h.shape[-1]).index_select(0, index)
        with eval_mode([self.head_transform]):
            return self.head_transform(rows)


class RobertaMLM(MLMEncoder):
    """RoBERTa: ``hf.roberta`` backbone, ``hf.lm_head`` (dense, gelu, layer_norm, decoder)."""

    backbone_attr = "roberta"

    @property
    def head_transform(self) -> nn.Module:
        head = self.hf.lm_head
        return _RobertaTransform(head.dense, head.layer_norm)

    @property
    def decoder(self) -> nn.Linear:
        return self.hf.lm_head.decoder


class _RobertaTransform(nn.Module):
    def __init__(self, dense: nn.Linear, layer_norm: nn.LayerNorm) -> None:
        super().__init__()
        self.dense, self.layer_norm = dense, layer_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(nn.functional.gelu(self.dense(x)))


def adapter_for(hf_model: nn.Module) -> MLMEncoder:
    """The :class:`MLMEncoder` over a Hugging Face masked LM (BertForMaskedLM, BertForPreTraining,
    RobertaForMaskedLM); ``ConfigError`` naming the class for any other model."""
    import transformers

    from sift_fast.errors import ConfigError

    if isinstance(hf_model, (transformers.BertForMaskedLM, transformers.BertForPreTraining)):
        return MLMEncoder(hf_model)
    if isinstance(hf_model, transformers.RobertaForMaskedLM):
        return RobertaMLM(hf_model)
    raise ConfigError(f"SIFT scores with a masked-LM head; {type(hf_model).__name__} has none (supported: "
                      "BertForMaskedLM, BertForPreTraining, RobertaForMaskedLM)")


def build_model(cfg: ModelConfig, vocab_size: int, seq_len: int, pad_id: int = 0) -> MLMEncoder:
    """Build a randomly initialised HF encoder from the config (no downloads), SDPA attention."""
    import transformers

    common = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        initializer_range=cfg.init_std,
        pad_token_id=pad_id,
    )
    if cfg.arch == "bert":
        hf_cfg = transformers.BertConfig(max_position_embeddings=max(512, seq_len), type_vocab_size=2, **common)
        cls = transformers.BertForPreTraining if cfg.model_class == "pretraining" else transformers.BertForMaskedLM
        adapter = MLMEncoder
    else:
        hf_cfg = transformers.RobertaConfig(max_position_embeddings=max(514, seq_len + 2), type_vocab_size=1, **common)
        cls, adapter = transformers.RobertaForMaskedLM, RobertaMLM
    hf_cfg._attn_implementation = "sdpa"
    model = cls(hf_cfg)
    return adapter(model)
