"""Data-parallel candidates and selection: a sharded candidate stream and global top-k across ranks.

Sharding: the global candidate batch of a step is ``W x C`` consecutive entries of the epoch
permutation (same seed everywhere); rank ``r`` builds only its own entries ``[r C, (r+1) C)``
(:class:`~sift_fast.data.loader.CandidateLoader` with ``rank``/``world_size``): host work per rank
is O(C). Masking is a pure function of (seed, epoch, sample id), so a single process with
``candidates = W x C`` sees exactly the union of the ranks' candidates, in rank order, and any rank
rebuilds any candidate from its id.

Selection scopes (``--selection-scope``):

* ``local``  — each rank keeps the top ``k = round(keep x C)`` of its own ``C`` (no communication).
* ``global`` — the ranks all-gather (sample id, score) pairs, ``[C, 2]`` int32 per rank (8 bytes a
  candidate; scores travel as their fp32 bits), never tokens. Every rank computes the same global
  top ``W x k`` of the ``W x C`` candidates (ties to the lower global index ``r C + j``), then
  :func:`assign_kept` gives each rank exactly ``k`` of them, its own first; a rank rebuilds the
  kept candidates it received from their ids. Uniform plans (selection ``random``, warmup and
  interrupt steps) draw ``W x k`` of ``W x C`` with a generator seeded by (seed, step), identical on
  every rank and exact on resume.
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

MESSAGE_BYTES_PER_CANDIDATE = 8  # int32 sample id + fp32 score bits


class ShardedCandidateLoader(CandidateLoader):
    """Rank ``rank``'s slice of a global candidate stream of ``world_size x batch_size`` sequences.

    Builds only its own ``batch_size`` candidates per step; its state (the global stream position) is
    identical on every rank, and a resume must keep ``world_size x batch_size``.
    """

    def state_dict(self) -> dict:
        return {**super().state_dict(), "global_batch": self.batch_size * self.world_size}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("global_batch", self.batch_size * self.world_size)
        if saved != self.batch_size * self.world_size:
            raise ConfigError(
                f"the checkpoint's global candidate batch is {saved} sequences, this run's is "
                f"{self.world_size} ranks x {self.batch_size} = {self.batch_size * self.world_size}: resume needs "
                "the same world size x candidates"
            )
        super().load_state_dict(state)


def sharded_loader_factory(rank: int, world_size: int) -> Callable[..., ShardedCandidateLoader]:
    """A ``Trainer(loader_factory=...)`` that builds the rank's :class:`ShardedCandidateLoader`."""

    def factory(train, batch_size, masker, pad_id, *, seed=0):
        return ShardedCandidateLoader(train, batch_size, masker, pad_id, seed=seed, rank=rank, world_size=world_size)

    return factory


def assign_kept(top: torch.Tensor | np.ndarray, k: int, world_size: int, candidates: int) -> list[np.ndarray]:
    """Split the ``W x k`` kept global indices ``top`` into ``W`` ascending shares of exactly ``k``.

    Rank ``r`` keeps its own kept candidates (global indices ``[r C, (r+1) C)``), the lowest ``k`` of
    them; the surplus of every rank, in global index order, fills the ranks short of ``k`` in rank
    order. Only surplus candidates change rank, and every rank computes the same split.
    """
    top = np.sort(np.asarray(top, dtype=np.int64).reshape(-1))
    if len(top) != k * world_size:
        raise ValueError(f"{len(top)} kept candidates for {world_size} ranks x {k}")
    owner = top // candidates
    counts = np.bincount(owner, minlength=world_size)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_within = np.arange(len(top)) - first[owner]
    keep = rank_within < k
    pool = top[~keep]  # surplus, in global index order
    deficit = np.maximum(k - counts, 0)
    take = np.concatenate([[0], np.cumsum(deficit)])
    return [np.concatenate([top[keep & (owner == r)], pool[take[r] : take[r + 1]]]) for r in range(world_size)]


def local_topk_union(scores: torch.Tensor, k: int, world_size: int) -> torch.Tensor:
    """Single-process equivalent of local selection on ``world_size`` shards: each shard's top k, ascending."""
    c = scores.numel() // world_size
    parts = [select_topk(scores[r * c : (r + 1) * c], k).sort().values + r * c for r in range(world_size)]
    return torch.cat(parts)


def uniform_generator(seed: int, step: int) -> torch.Generator:
    """Generator for the global uniform draw of ``step``: the same on every rank, stateless across resumes."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 7919 + 0x51F7) % (2**63 - 1))


def pack(sample_ids: torch.Tensor, scores: torch.Tensor | None) -> torch.Tensor:
    """One int32 ``[C, 2]`` message: sample id and the fp32 score's bits (0 without scores)."""
    ids = sample_ids.to(torch.int64)
    if len(ids) and int(ids.max()) >= 2**31:
        raise ConfigError("global selection sends int32 sample ids: the corpus has more than 2**31 samples")
    sc = torch.zeros(len(ids)) if scores is None else scores.detach().float().cpu()
    return torch.stack([ids.to(torch.int32), sc.contiguous().view(torch.int32)], dim=1)


def unpack(gathered: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """(sample ids int64 [W C], scores fp32 [W C]) of the all-gathered :func:`pack` messages (rank order)."""
    g = gathered.cpu()
    return g[:, 0].to(torch.int64).numpy(), g[:, 1].contiguous().view(torch.float32)


def concat_batches(a: Batch, b: Batch | None, pad_id: int) -> Batch:
    """Rows of ``a`` then rows of ``b`` (same epoch) as one batch."""
    if b is None or b.size == 0:
        return a
    cat = lambda name: torch.cat([getattr(a, name), getattr(b, name)]).numpy()
    return make_batch(cat("input_ids"), cat("labels"), cat("sample_ids"), pad_id, a.epoch)


class GlobalSelection:
    """``select_fn`` for ``Trainer``/``sift_step``: global top-k over the candidates of all ranks.

    One all-gather per step of (sample id, score) pairs. Returns a :class:`~sift_fast.selection.Selection`:
    ``batch`` = this rank's ``C`` candidates followed by the ``m`` kept candidates it received
    (rebuilt from their ids by ``build(ids, epoch)``, the loader's :meth:`CandidateLoader.build`),
    ``kept`` = its ``k`` rows of ``batch`` (own kept rows ascending, then ``C .. C+m-1``), so
    ``batch.select(kept)`` is the batch to backprop. ``scores`` (mode ``score``; ``None`` for a uniform
    plan) holds every gathered score, those of ``batch``'s rows first: ``scores[kept]`` are the kept
    rows' scores and their mean over all entries is the global candidates' mean. ``step_fn`` returns
    the current step (for the uniform draw); ``device`` carries the collective (NCCL needs CUDA tensors).
    """

    def __init__(self, rank: int, world_size: int, device: torch.device, pad_id: int, seed: int,
                 step_fn: Callable[[], int], build: Callable[[np.ndarray, int], Batch]) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device
        self.pad_id, self.seed, self.step_fn, self.build = pad_id, seed, step_fn, build
        self.last_bytes = 0  # what this rank contributed to the last step's all-gather
        self.last_received = 0  # kept candidates rebuilt from other ranks at the last step

    def _all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        t = tensor.to(self.device).contiguous()
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t)
        return torch.cat(out).cpu()

    def __call__(self, plan: Plan, batch: Batch, scores: torch.Tensor | None) -> Selection:
        self.last_bytes = self.last_received = 0
        if plan.mode == "all":
            return Selection(torch.arange(batch.size), batch, scores)
        if plan.mode == "score" and scores is None:
            raise ValueError("mode 'score' needs scores")
        msg = pack(batch.sample_ids, scores if plan.mode == "score" else None)
        self.last_bytes = msg.numel() * msg.element_size()
        ids, all_scores = unpack(self._all_gather(msg))
        k, w, c = plan.keep_count, self.world_size, batch.size
        if plan.mode == "score":
            top = select_topk(all_scores, k * w)
        else:
            top = torch.randperm(c * w, generator=uniform_generator(self.seed, self.step_fn()))[: k * w]
        share = assign_kept(top, k, w, c)[self.rank]
        own = share // c == self.rank
        foreign = share[~own]
        self.last_received = len(foreign)
        received = self.build(ids[foreign], batch.epoch) if len(foreign) else None
        source = concat_batches(batch, received, self.pad_id)
        kept = torch.from_numpy(np.concatenate([share[own] - self.rank * c, c + np.arange(len(foreign))]))
        if plan.mode != "score":
            return Selection(kept, source, None)
        mine = np.arange(self.rank * c, (self.rank + 1) * c)
        rest = np.setdiff1d(np.arange(c * w), np.concatenate([mine, foreign]), assume_unique=True)
        order = torch.from_numpy(np.concatenate([mine, foreign, rest]))
        return Selection(kept, source, all_scores[order])
