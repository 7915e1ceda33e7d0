"""Background GPU telemetry through NVML (``nvidia-ml-py``): utilisation, memory, power, SM clock."""

from __future__ import annotations

import sys
import threading
from typing import Any

_MIB = 1024 * 1024

# Summary key stem per metric; the summary has "<stem>_mean" and "<stem>_max" for each.
METRICS = ("gpu_util_pct", "gpu_mem_used_mib", "gpu_power_w", "gpu_sm_clock_mhz")


class NvmlSampler:
    """Samples one GPU every ``interval_s`` seconds on a daemon thread.

    ``summary()`` returns mean/max per metric since the previous ``summary()`` and resets, or None
    when NVML is unavailable or nothing was sampled. Without pynvml or an NVML library ``start()``
    prints one notice line to stderr and the sampler stays inert; no method raises.
    """

    def __init__(self, device_index: int = 0, interval_s: float = 0.5) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.device_index = device_index
        self.interval_s = interval_s
        self._nvml: Any = None
        self._handle: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._broken: set[str] = set()  # metrics that raised once (e.g. power on some boards)
        self._notified = False
        self._reset_stats()

    @property
    def available(self) -> bool:
        """True while NVML is initialised and sampling."""
        return self._handle is not None

    def start(self) -> NvmlSampler:
        """Initialise NVML and start the sampling thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
            except Exception:
                _safe_call(pynvml.nvmlShutdown)
                raise
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, bad index, ...
            if not self._notified:
                self._notified = True
                reason = str(exc).strip() or type(exc).__name__
                print(f"NVML unavailable: {reason}; GPU telemetry disabled", file=sys.stderr)
            return self
        self._nvml, self._handle = pynvml, handle
        self._broken.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sift-nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (join with a timeout) and shut NVML down; collected stats are kept."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=timeout_s)
        if self._nvml is not None:
            _safe_call(self._nvml.nvmlShutdown)
        self._nvml, self._handle = None, None

    def summary(self) -> dict[str, float] | None:
        """Mean/max of each metric since the last call (then reset), plus ``nvml_samples``."""
        with self._lock:
            stats, n = self._stats, self._samples
            self._reset_stats()
        if n == 0:
            return None
        out: dict[str, float] = {}
        for stem in METRICS:
            total, count, peak = stats[stem]
            if count:
                out[f"{stem}_mean"] = total / count
                out[f"{stem}_max"] = peak
        out["nvml_samples"] = n
        return out

    def sample(self) -> None:
        """Take one sample now (the thread calls this; no-op when unavailable)."""
        nvml, handle = self._nvml, self._handle
        if handle is None:
            return
        values: dict[str, float] = {}
        self._read(values, "gpu_util_pct", lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        self._read(values, "gpu_mem_used_mib", lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used / _MIB)
        self._read(values, "gpu_power_w", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
        self._read(
            values, "gpu_sm_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)
        )
        if not values:
            return
        with self._lock:
            self._samples += 1
            for stem, value in values.items():
                acc = self._stats[stem]
                acc[0] += value
                acc[1] += 1
                acc[2] = max(acc[2], value)

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def _read(self, values: dict[str, float], stem: str, fn: Any) -> None:
        if stem in self._broken:
            return
        try:
            values[stem] = float(fn())
        except Exception:  # unsupported on this board, or NVML shut down under us
            self._broken.add(stem)

    def _reset_stats(self) -> None:
        # stem -> [sum, count, max]
        self._stats: dict[str, list[float]] = {stem: [0.0, 0, float("-inf")] for stem in METRICS}
        self._samples = 0


def _safe_call(fn: Any) -> None:
    try:
        fn()
    except Exception:
        pass
