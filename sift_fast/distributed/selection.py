"""Data-parallel candidates and selection: a sharded candidate stream and global top-k across ranks.

Sharding: every rank draws the same *global* candidate batch of ``W x C`` sequences from one
:class:`CandidateLoader` (same seed everywhere; masking is per (seed, epoch, sample id)) and keeps
rows ``[r C, (r+1) C)``. A single process with ``candidates = W x C`` therefore sees exactly the
union of the ranks' candidates, in rank order.

Selection scopes (``--selection-scope``):

* ``local``  — each rank keeps the top ``k = round(keep x C)`` of its own ``C`` (no communication).
* ``global`` — the ranks all-gather their candidate scores and candidate tokens in one message
  (ids, labels, sample id, score bits: ``[C, 2S+2]`` int32), every rank computes the same global top ``W x k``
  of the ``W x C`` candidates, sorted by global index, and rank ``r`` takes entries
  ``[r k, (r+1) k)``: each rank backprops the same static count, and because shares are contiguous in
  global index order a rank's share is mostly its own candidates. Uniform plans (selection
  ``random``, warmup and interrupt steps) draw ``W x k`` of ``W x C`` with a generator seeded by
  (seed, step), identical on every rank and exact on resume.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sift_fast.data import CandidateLoader
from sift_fast.data.batch import Batch, make_batch
from sift_fast.errors import ConfigError
from sift_fast.ops import select_topk
from sift_fast.selection import Plan, Selection


class ShardedCandidateLoader:
    """Rank ``rank``'s slice of a global candidate stream of ``world_size x batch_size`` sequences.

    Same constructor shape as :class:`CandidateLoader` plus ``rank``/``world_size``; its state (the
    global stream position) is identical on every rank.
    """

    def __init__(self, train: np.ndarray, batch_size: int, masker, pad_id: int, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.inner = CandidateLoader(train, batch_size * world_size, masker, pad_id, seed=seed)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.rows = np.arange(rank * batch_size, (rank + 1) * batch_size)

    @property
    def epoch(self) -> int:
        return self.inner.epoch

    @property
    def position(self) -> int:
        return self.inner.position

    def next_batch(self) -> Batch:
        return self.inner.next_batch().select(self.rows)

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {**self.inner.state_dict(), "global_batch": self.batch_size * self.world_size}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("global_batch", self.batch_size * self.world_size)
        if saved != self.batch_size * self.world_size:
            raise ConfigError(
                f"the checkpoint's global candidate batch is {saved} sequences, this run's is "
                f"{self.world_size} ranks x {self.batch_size} = {self.batch_size * self.world_size}: resume needs "
                "the same world size x candidates"
            )
        self.inner.load_state_dict(state)


def sharded_loader_factory(rank: int, world_size: int) -> Callable[..., ShardedCandidateLoader]:
    """A ``Trainer(loader_factory=...)`` that builds the rank's :class:`ShardedCandidateLoader`."""

    def factory(train, batch_size, masker, pad_id, *, seed=0):
        return ShardedCandidateLoader(train, batch_size, masker, pad_id, seed=seed, rank=rank, world_size=world_size)

    return factory


def global_topk_share(scores: torch.Tensor, k: int, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of the global top ``world_size x k`` of all-gathered ``scores`` (ascending)."""
    top = select_topk(scores, k * world_size).sort().values
    return top[rank * k : (rank + 1) * k]


def local_topk_union(scores: torch.Tensor, k: int, world_size: int) -> torch.Tensor:
    """Single-process equivalent of local selection on ``world_size`` shards: each shard's top k, ascending."""
    c = scores.numel() // world_size
    parts = [select_topk(scores[r * c : (r + 1) * c], k).sort().values + r * c for r in range(world_size)]
    return torch.cat(parts)


def uniform_generator(seed: int, step: int) -> torch.Generator:
    """Generator for the global uniform draw of ``step``: the same on every rank, stateless across resumes."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 7919 + 0x51F7) % (2**63 - 1))


def pack(batch: Batch, scores: torch.Tensor | None) -> torch.Tensor:
    """One int32 ``[C, 2S+2]`` message: ids, labels, sample id and the fp32 score's bits (0 without scores)."""
    sc = torch.zeros(batch.size) if scores is None else scores.detach().float().cpu()
    return torch.cat([batch.input_ids.to(torch.int32), batch.labels.to(torch.int32),
                      batch.sample_ids.to(torch.int32)[:, None], sc.contiguous().view(torch.int32)[:, None]], dim=1)


def unpack(gathered: torch.Tensor, seq_len: int, pad_id: int, epoch: int) -> tuple[Batch, torch.Tensor]:
    """The global batch and scores from the all-gathered :func:`pack` messages (rank order)."""
    g = gathered.cpu()
    s = seq_len
    scores = g[:, 2 * s + 1].contiguous().view(torch.float32)
    g = g[:, : 2 * s + 1].to(torch.int64)
    return make_batch(g[:, :s].numpy(), g[:, s : 2 * s].numpy(), g[:, 2 * s].numpy(), pad_id, epoch), scores


class GlobalSelection:
    """``select_fn`` for ``Trainer``/``sift_step``: global top-k over the candidates of all ranks.

    One all-gather per step of :func:`pack` messages (scores and tokens together: one collective's
    latency). Returns a :class:`~sift_fast.selection.Selection` whose ``kept`` indexes the gathered batch.
    ``step_fn`` returns the current step (for the uniform draw); ``device`` carries the collective
    (NCCL needs CUDA tensors).
    """

    def __init__(self, rank: int, world_size: int, device: torch.device, pad_id: int, seed: int,
                 step_fn: Callable[[], int]) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device
        self.pad_id, self.seed, self.step_fn = pad_id, seed, step_fn
        self.last_bytes = 0  # what this rank contributed to the last step's all-gather

    def _all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        t = tensor.to(self.device).contiguous()
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t)
        return torch.cat(out).cpu()

    def __call__(self, plan: Plan, batch: Batch, scores: torch.Tensor | None) -> Selection:
        self.last_bytes = 0
        if plan.mode == "all":
            return Selection(torch.arange(batch.size), batch, scores)
        if plan.mode == "score" and scores is None:
            raise ValueError("mode 'score' needs scores")
        msg = pack(batch, scores if plan.mode == "score" else None)
        self.last_bytes = msg.numel() * msg.element_size()
        global_batch, all_scores = unpack(self._all_gather(msg), batch.input_ids.shape[1], self.pad_id, batch.epoch)
        k, w = plan.keep_count, self.world_size
        if plan.mode == "score":
            kept = global_topk_share(all_scores, k, self.rank, w)
        else:
            all_scores = None
            gen = uniform_generator(self.seed, self.step_fn())
            top = torch.randperm(batch.size * w, generator=gen)[: k * w].sort().values
            kept = top[self.rank * k : (self.rank + 1) * k]
        return Selection(kept, global_batch, all_scores)
