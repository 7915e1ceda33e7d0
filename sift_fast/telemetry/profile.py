"""A step window for profiling: cudaProfilerStart/Stop (for nsys) and an optional torch.profiler trace.

``nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop -t cuda,nvtx ...`` then
captures exactly steps A..B (inclusive); with ``torch_trace_dir`` the same steps are written as a
Chrome trace ``trace_steps_A-B.json``.
"""

from __future__ import annotations

import os
import re
import sys

import torch

from sift_fast.errors import ConfigError
from sift_fast.io import atomic_path

_SPEC = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*")


def parse_profile_steps(spec: str | None) -> tuple[int, int] | None:
    """Parse "--profile-steps A:B" into (A, B) with 0 <= A < B; None stays None."""
    if spec is None:
        return None
    m = _SPEC.fullmatch(spec)
    if m is None or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError(f"--profile-steps expects A:B with integers 0 <= A < B, got {spec!r}")
    return int(m.group(1)), int(m.group(2))


class ProfileWindow:
    """Starts profiling at the beginning of step A and stops after step B (inclusive).

    Call ``step_begin(step)`` / ``step_end(step)`` around every step and ``close()`` at the end
    (or use as a context manager). A run resumed inside the window starts at its first step; the
    trace file is named after the steps actually captured. With ``rank`` set the trace name gets a
    ``.rank<r>`` suffix so ranks do not overwrite each other.
    """

    def __init__(
        self,
        window: tuple[int, int] | None,
        torch_trace_dir: str | None = None,
        rank: int | None = None,
    ) -> None:
        if torch_trace_dir is not None and window is None:
            raise ConfigError("--torch-trace-dir needs --profile-steps A:B to choose the steps to trace")
        self.window = window
        self.torch_trace_dir = torch_trace_dir
        self.rank = rank
        self.trace_path: str | None = None  # set once a trace was written
        self._cuda = torch.cuda.is_available()
        self._active = False
        self._done = False
        self._first = -1
        self._last = -1
        self._prof: torch.profiler.profile | None = None
        if window is not None and torch_trace_dir is not None:
            try:
                os.makedirs(torch_trace_dir, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"--torch-trace-dir {torch_trace_dir!r} cannot be created: {exc}") from exc

    @property
    def active(self) -> bool:
        """True between the window's first step_begin and its stop."""
        return self._active

    def step_begin(self, step: int) -> None:
        """Start profiling when ``step`` is the first step inside the window."""
        if self.window is None or self._active or self._done:
            return
        a, b = self.window
        if not a <= step <= b:
            return
        self._first = self._last = step
        if self._cuda:
            torch.cuda.synchronize()  # earlier steps' queued kernels stay out of the capture
            torch.cuda.cudart().cudaProfilerStart()
        if self.torch_trace_dir is not None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self._cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._prof = torch.profiler.profile(activities=activities, record_shapes=False)
            self._prof.start()
        self._active = True

    def step_end(self, step: int) -> None:
        """Stop profiling after the window's last step."""
        if not self._active:
            return
        self._last = step
        if step >= self.window[1]:
            self._stop()

    def close(self) -> None:
        """Stop anything still running (a run that ended inside the window)."""
        if self._active:
            self._stop()

    def __enter__(self) -> ProfileWindow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stop(self) -> None:
        self._active, self._done = False, True
        if self._cuda:
            torch.cuda.synchronize()  # let the window's kernels finish inside the capture
            torch.cuda.cudart().cudaProfilerStop()
        prof, self._prof = self._prof, None
        if prof is None:
            return
        prof.stop()
        suffix = "" if self.rank is None else f".rank{self.rank}"
        path = os.path.join(self.torch_trace_dir, f"trace_steps_{self._first}-{self._last}{suffix}.json")
        try:
            with atomic_path(path) as tmp:
                prof.export_chrome_trace(str(tmp))
        except (OSError, RuntimeError) as exc:  # a lost trace must not end the run
            print(f"warning: could not write torch trace {path}: {exc}", file=sys.stderr)
            return
        self.trace_path = path
