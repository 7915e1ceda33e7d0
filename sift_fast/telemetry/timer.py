"""Per-phase step timing without host syncs in the hot path.

On CUDA each phase records a pair of timing events on the current stream; pairs are resolved
lazily: completed ones opportunistically (``Event.query()``, non-blocking) once many are pending,
and the rest in ``results()`` with one wait on the newest event. Times are GPU-stream spans. On CPU
phases use ``time.perf_counter()``. Every phase also opens ``nvtx_range(name)``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import torch

from sift_fast.telemetry.nvtx import nvtx_range

# Resolve completed event pairs without blocking once this many are pending.
_DRAIN_AT = 256


class _CpuPhase:
    __slots__ = ("_timer", "_name", "_rng", "_t0")

    def __init__(self, timer: StepTimer, name: str) -> None:
        self._timer, self._name = timer, name
        self._rng = nvtx_range(name)

    def __enter__(self) -> None:
        self._rng.__enter__()
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._t0
        self._rng.__exit__(*exc)
        totals = self._timer._totals
        totals[self._name] = totals.get(self._name, 0.0) + elapsed


class _CudaPhase:
    __slots__ = ("_timer", "_name", "_rng", "_start")

    def __init__(self, timer: StepTimer, name: str) -> None:
        self._timer, self._name = timer, name
        self._rng = nvtx_range(name)

    def __enter__(self) -> None:
        self._rng.__enter__()
        self._start = self._timer._record()

    def __exit__(self, *exc: object) -> None:
        timer = self._timer
        end = timer._record()
        self._rng.__exit__(*exc)
        timer._pending.append((self._name, self._start, end))
        if len(timer._pending) >= _DRAIN_AT:
            timer._drain(block=False)


class StepTimer:
    """Named phase timer: ``with timer.phase("score"): ...``; ``results()`` sums and resets."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.uses_cuda_events = self.device.type == "cuda" and torch.cuda.is_available()
        self._totals: dict[str, float] = {}
        self._pending: deque[tuple[str, Any, Any]] = deque()
        self._free_events: list[Any] = []

    def phase(self, name: str) -> _CpuPhase | _CudaPhase:
        """Context manager timing one occurrence of phase ``name`` (nests; names may repeat)."""
        return _CudaPhase(self, name) if self.uses_cuda_events else _CpuPhase(self, name)

    def results(self) -> dict[str, float]:
        """Seconds per phase summed since the last call, then reset. Waits for pending CUDA events."""
        self._drain(block=True)
        out, self._totals = self._totals, {}
        return out

    def reset(self) -> None:
        """Drop all totals and pending events without waiting."""
        self._totals = {}
        self._pending.clear()

    def _record(self) -> Any:
        ev = self._free_events.pop() if self._free_events else torch.cuda.Event(enable_timing=True)
        ev.record(torch.cuda.current_stream(self.device))
        return ev

    def _drain(self, block: bool) -> None:
        pending = self._pending
        if not pending:
            return
        if block:
            pending[-1][2].synchronize()  # one wait: later-recorded events finish last on a stream
        totals, free = self._totals, self._free_events
        while pending:
            name, start, end = pending[0]
            if not end.query():
                if not block:
                    return
                end.synchronize()  # a pair on another stream than the newest event
            pending.popleft()
            totals[name] = totals.get(name, 0.0) + start.elapsed_time(end) / 1000.0
            free.append(start)
            free.append(end)
