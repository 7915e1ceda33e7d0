"""A masked-LM batch with host-computed indices of its masked positions."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass
class Batch:
    """Rows of a masked-LM batch.

    ``masked_index`` (flat indices into B*S, ascending) and ``masked_seq`` (row of each) list the
    positions with ``labels != -100``. ``masked_row_ptr`` (CPU, int64 [B+1], CSR offsets of each row's
    masked positions in ``masked_index``) always stays on the host, so :meth:`select` never syncs
    with an accelerator when the selected rows are given on the host.
    """

    input_ids: torch.Tensor  # int64 [B, S]
    attention_mask: torch.Tensor  # int64 [B, S], 1 = token, 0 = pad
    labels: torch.Tensor  # int64 [B, S], -100 = not predicted
    sample_ids: torch.Tensor  # int64 [B]
    masked_index: torch.Tensor  # int64 [M]
    masked_seq: torch.Tensor  # int64 [M]
    epoch: int = 0
    masked_row_ptr: torch.Tensor | None = field(default=None, repr=False)  # CPU int64 [B+1]
    row_padded: torch.Tensor | None = field(default=None, repr=False)  # CPU bool [B]: row has padding
    token_type_ids: torch.Tensor | None = field(default=None, repr=False)  # int64 [B, S] segment ids, or None

    def __post_init__(self) -> None:
        if self.masked_row_ptr is None:
            counts = torch.bincount(self.masked_seq.cpu(), minlength=self.size)  # syncs if on device
            self.masked_row_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        if self.row_padded is None:
            self.row_padded = (self.attention_mask == 0).any(1).cpu()  # syncs if on device

    @property
    def has_padding(self) -> bool:
        """Whether any row is padded (known on the host)."""
        return bool(self.row_padded.any())

    @property
    def model_attention_mask(self) -> torch.Tensor | None:
        """The attention mask to give the model: ``None`` for an unpadded batch.

        HF builds no mask from ``None`` (SDPA then runs unmasked), and it avoids the device-side
        ``mask.all()`` check, a host sync, that HF runs on a given mask.
        """
        return self.attention_mask if self.has_padding else None

    @property
    def size(self) -> int:
        """Number of rows B."""
        return self.input_ids.shape[0]

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    @property
    def num_masked(self) -> int:
        """M, known on the host."""
        return int(self.masked_row_ptr[-1])

    @property
    def masked_targets(self) -> torch.Tensor:
        """Labels of the masked positions, int64 [M]."""
        return self.labels.reshape(-1).index_select(0, self.masked_index)

    def select(self, rows: torch.Tensor | np.ndarray | list[int]) -> Batch:
        """Sub-batch of ``rows`` (in the given order, repeats allowed), masked indices recomputed.

        Computed from the host-side ``masked_row_ptr`` and the existing ``masked_index``: no sync when
        ``rows`` is on the host (list, numpy or CPU tensor). If ``rows`` is an accelerator tensor it is
        copied to the host once (one sync).
        """
        rows_host = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        rows_host = rows_host.astype(np.int64, copy=False).reshape(-1)
        if len(rows_host) and (rows_host.min() < 0 or rows_host.max() >= self.size):
            raise IndexError(f"rows out of range for a batch of {self.size}")
        dev = self.device
        if isinstance(rows, torch.Tensor) and rows.device == dev:
            rows_dev = rows.to(torch.int64).reshape(-1)
        else:
            rows_dev = torch.from_numpy(rows_host).to(dev, non_blocking=True)

        ptr = self.masked_row_ptr.numpy()
        starts = ptr[rows_host]
        counts = ptr[rows_host + 1] - starts
        new_ptr = np.zeros(len(rows_host) + 1, dtype=np.int64)
        np.cumsum(counts, out=new_ptr[1:])
        new_seq = np.repeat(np.arange(len(rows_host), dtype=np.int64), counts)
        old_pos = np.arange(new_ptr[-1], dtype=np.int64) - new_ptr[:-1][new_seq] + starts[new_seq]
        seq_len = self.input_ids.shape[1]
        old_index = self.masked_index.index_select(0, torch.from_numpy(old_pos).to(dev, non_blocking=True))
        new_seq_dev = torch.from_numpy(new_seq).to(dev, non_blocking=True)
        take = lambda t: t.index_select(0, rows_dev)  # much cheaper than t[rows] on CPU
        return Batch(
            input_ids=take(self.input_ids),
            attention_mask=take(self.attention_mask),
            labels=take(self.labels),
            sample_ids=take(self.sample_ids),
            masked_index=old_index % seq_len + new_seq_dev * seq_len,
            masked_seq=new_seq_dev,
            epoch=self.epoch,
            masked_row_ptr=torch.from_numpy(new_ptr),
            row_padded=self.row_padded[torch.from_numpy(rows_host)],
            token_type_ids=None if self.token_type_ids is None else take(self.token_type_ids),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Copy the tensors to ``device`` (``masked_row_ptr`` stays on the host)."""
        move = lambda t: t.to(device, non_blocking=non_blocking)
        return replace(
            self,
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            labels=move(self.labels),
            sample_ids=move(self.sample_ids),
            masked_index=move(self.masked_index),
            masked_seq=move(self.masked_seq),
            token_type_ids=None if self.token_type_ids is None else move(self.token_type_ids),
        )

    def pin_memory(self) -> Batch:
        """Page-locked copy for async host-to-device transfer; unchanged when no accelerator exists."""
        if not torch.cuda.is_available():
            return self
        return replace(
            self,
            input_ids=self.input_ids.pin_memory(),
            attention_mask=self.attention_mask.pin_memory(),
            labels=self.labels.pin_memory(),
            sample_ids=self.sample_ids.pin_memory(),
            masked_index=self.masked_index.pin_memory(),
            masked_seq=self.masked_seq.pin_memory(),
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids.pin_memory(),
        )


def make_batch(
    input_ids: np.ndarray, labels: np.ndarray, sample_ids: np.ndarray, pad_id: int, epoch: int = 0
) -> Batch:
    """Build a CPU :class:`Batch` from masked ids and labels ([B, S]) and the rows' sample ids ([B])."""
    ids = np.ascontiguousarray(input_ids, dtype=np.int64)
    lab = np.ascontiguousarray(labels, dtype=np.int64)
    if ids.ndim != 2 or ids.shape != lab.shape:
        raise ValueError(f"input_ids {ids.shape} and labels {lab.shape} must be the same [B, S] shape")
    sid = np.ascontiguousarray(sample_ids, dtype=np.int64).reshape(-1)
    if len(sid) != ids.shape[0]:
        raise ValueError(f"{len(sid)} sample_ids for {ids.shape[0]} rows")
    masked_index = np.flatnonzero(lab.reshape(-1) != -100)
    masked_seq = masked_index // ids.shape[1]
    row_ptr = np.searchsorted(masked_seq, np.arange(ids.shape[0] + 1), side="left")
    return Batch(
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy((ids != pad_id).astype(np.int64)),
        labels=torch.from_numpy(lab),
        sample_ids=torch.from_numpy(sid),
        masked_index=torch.from_numpy(masked_index.astype(np.int64)),
        masked_seq=torch.from_numpy(masked_seq.astype(np.int64)),
        epoch=int(epoch),
        masked_row_ptr=torch.from_numpy(row_ptr.astype(np.int64)),
    )
