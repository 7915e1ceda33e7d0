"""Memory usage of the training device: CUDA allocator stats, or process RSS on CPU."""

from __future__ import annotations

import os
import resource
import sys

import torch

_MIB = 1024 * 1024


def memory_stats(device: torch.device | str) -> dict[str, float]:
    """Memory in MiB.

    CUDA: ``mem_allocated_mib``, ``mem_reserved_mib``, ``mem_peak_allocated_mib`` (torch.cuda; peak
    since the last ``reset_peak``). Otherwise: ``mem_rss_mib`` (current RSS from /proc/self/statm,
    Linux only) and ``mem_peak_rss_mib`` (``resource.getrusage`` ru_maxrss, process lifetime peak).
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return {
            "mem_allocated_mib": torch.cuda.memory_allocated(device) / _MIB,
            "mem_reserved_mib": torch.cuda.memory_reserved(device) / _MIB,
            "mem_peak_allocated_mib": torch.cuda.max_memory_allocated(device) / _MIB,
        }
    out: dict[str, float] = {}
    rss = _current_rss_bytes()
    if rss is not None:
        out["mem_rss_mib"] = rss / _MIB
    out["mem_peak_rss_mib"] = _peak_rss_bytes() / _MIB
    return out


def reset_peak(device: torch.device | str) -> None:
    """Reset the CUDA peak-allocated counter; no-op on CPU (ru_maxrss cannot be reset)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


def _current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux
