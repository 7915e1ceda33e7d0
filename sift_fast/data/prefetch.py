"""Candidate batches built ahead in a background thread (bounded queue, deterministic order, exact resume).

:class:`Prefetcher` wraps a :class:`~sift_fast.data.loader.CandidateLoader`: one thread calls its
``next_batch`` up to ``depth`` batches ahead (numpy and torch release the GIL for the heavy parts, so
batch building overlaps the step's device work) and, on CUDA, pins each batch for an async
host-to-device copy. The stream is the loader's own, in the same order; :meth:`state_dict` is the
position after the last batch *handed out*, so a checkpoint resumes exactly, however far ahead the
thread had got.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from sift_fast.data.batch import Batch


class Prefetcher:
    """``loader``'s batches, ``depth`` ahead. Same interface as the loader (``next_batch``, ``build``, state)."""

    def __init__(self, loader: Any, depth: int = 2, *, pin: bool = False) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.loader, self.depth, self.pin = loader, int(depth), bool(pin)
        self._state = loader.state_dict()  # the stream position of the next batch handed out
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    # --- the worker -------------------------------------------------------------------------------
    def _start(self) -> None:
        self._queue, self._stop = queue.Queue(maxsize=self.depth), threading.Event()
        self._thread = threading.Thread(target=self._work, args=(self._queue, self._stop), daemon=True,
                                        name="sift-prefetch")
        self._thread.start()

    def _work(self, q: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                batch = self.loader.next_batch()
                item: tuple = (batch.pin_memory() if self.pin else batch, self.loader.state_dict(), None)
            except BaseException as exc:  # handed to the consumer, raised there
                item = (None, None, exc)
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def close(self) -> None:
        """Stop the thread (batches it built ahead are dropped; the stream position is kept)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = self._stop = None

    # --- the loader interface ---------------------------------------------------------------------
    def next_batch(self) -> Batch:
        if self._thread is None:
            self._start()
        batch, state, exc = self._queue.get()
        if exc is not None:
            self.close()
            raise exc
        self._state = state
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def build(self, sample_ids, epoch: int) -> Batch:
        """The loader's :meth:`~sift_fast.data.loader.CandidateLoader.build` (pure: safe beside the thread)."""
        return self.loader.build(sample_ids, epoch)

    @property
    def epoch(self) -> int:
        return int(self._state["epoch"])

    @property
    def position(self) -> int:
        return int(self._state["position"])

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    def state_dict(self) -> dict:
        return dict(self._state)

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.loader.load_state_dict(state)
        self._state = self.loader.state_dict()

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass


def maybe_prefetch(loader: Any, depth: int, device_type: str) -> Any:
    """``loader`` wrapped in a :class:`Prefetcher` of ``depth`` (-1: 2 on CUDA, off elsewhere; 0: off)."""
    if depth < 0:
        depth = 2 if device_type == "cuda" else 0
    return Prefetcher(loader, depth, pin=device_type == "cuda") if depth else loader
