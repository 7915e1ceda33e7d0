"""Endless, resumable, rank-sharded stream of masked candidate batches; fixed validation batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sift_fast.data.batch import Batch, make_batch
from sift_fast.data.mlm import MLMMasker
from sift_fast.errors import ConfigError, DataError


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n train sequences in ``epoch`` (seeded by (seed, epoch)); int32 below 2**31."""
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    return perm.astype(np.int32) if n < 2**31 else perm


def take_rows(train, sample_ids: np.ndarray, epoch: int) -> np.ndarray:
    """Rows ``sample_ids`` of an in-memory ``[N, S]`` array or a lazy sample source (``rows(ids, epoch)``)."""
    rows = getattr(train, "rows", None)
    return rows(sample_ids, epoch) if rows is not None else train[sample_ids]


class CandidateLoader:
    """Endless stream of candidate batches over the packed train rows (an array or lazy samples).

    Per epoch a permutation seeded by (seed, epoch); the stream's global batches are
    ``batch_size x world_size`` consecutive entries of the permutation (the incomplete tail of an epoch
    is dropped) and rank ``rank`` builds only its own slice ``[rank C, (rank+1) C)``: host work per
    rank is O(C) whatever the world size. Masking by ``masker`` with (epoch, sample_id), so any rank
    rebuilds any sample from its id (:meth:`build`) and a resumed stream reproduces the
    uninterrupted one exactly.
    """

    def __init__(self, train, batch_size: int, masker: MLMMasker, pad_id: int, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if getattr(train, "ndim", 2) != 2 or len(train) == 0:
            raise DataError(f"train rows must be a non-empty [N, S] array, got shape {getattr(train, 'shape', '?')}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside a world of {world_size}")
        global_batch = batch_size * world_size
        if global_batch > len(train):
            raise DataError(
                f"batch_size {global_batch} is larger than the {len(train)} train sequences: "
                "use a bigger corpus, a shorter seq_len or a smaller batch"
            )
        self.train = train
        self.batch_size = int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.masker = masker
        self.pad_id = int(pad_id)
        self.seed = int(seed)
        self.batches_per_epoch = len(train) // global_batch
        self._epoch = 0
        self._position = 0  # index of the next global batch within the epoch
        self._perm: np.ndarray | None = None
        self._perm_epoch = -1

    @property
    def epoch(self) -> int:
        """Epoch of the next batch (= number of completed epochs)."""
        return self._epoch

    @property
    def position(self) -> int:
        """Index of the next batch within the current epoch."""
        return self._position

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self._epoch:
            self._perm = None  # release the old epoch's order before drawing the next
            self._perm = epoch_permutation(len(self.train), self.seed, self._epoch)
            self._perm_epoch = self._epoch
        return self._perm

    def build(self, sample_ids: np.ndarray, epoch: int) -> Batch:
        """The masked batch of ``sample_ids`` in ``epoch``: a pure function of (seed, epoch, ids)."""
        sample_ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        ids, labels = self.masker(take_rows(self.train, sample_ids, epoch), sample_ids, epoch)
        return make_batch(ids, labels, sample_ids, self.pad_id, epoch)

    def next_sample_ids(self) -> tuple[np.ndarray, int]:
        """(this rank's sample ids of the next batch, its epoch); advances the stream."""
        start = (self._position * self.world_size + self.rank) * self.batch_size
        sample_ids = self._permutation()[start : start + self.batch_size].astype(np.int64)
        epoch = self._epoch
        self._position += 1
        if self._position == self.batches_per_epoch:
            self._epoch, self._position = self._epoch + 1, 0
        return sample_ids, epoch

    def next_batch(self) -> Batch:
        """The next candidate batch of this rank (CPU tensors)."""
        return self.build(*self.next_sample_ids())

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        """Where the stream stands: {"epoch": int, "position": int} (position = next batch in the epoch)."""
        return {"epoch": self._epoch, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a :meth:`state_dict` (the next batch is the one the saved loader would have produced)."""
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.batches_per_epoch:
            raise DataError(
                f"loader state epoch={epoch} position={position} does not fit {self.batches_per_epoch} "
                "batches per epoch (was the corpus or batch size changed?)"
            )
        self._epoch, self._position = epoch, position


def validation_batches(valid: np.ndarray, batch_size: int, masker: MLMMasker, pad_id: int) -> list[Batch]:
    """Validation batches in row order with fixed masking (epoch 0, sample ids = row index).

    The last batch may be smaller.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    batches = []
    for start in range(0, len(valid), batch_size):
        rows = np.arange(start, min(start + batch_size, len(valid)))
        ids, labels = masker(valid[rows], rows, 0)
        batches.append(make_batch(ids, labels, rows, pad_id, 0))
    return batches
