"""Telemetry: NVTX ranges, NVML sampling, profiling windows, memory stats and step timing."""

from sift_fast.telemetry.memory import memory_stats, reset_peak
from sift_fast.telemetry.nvml import NvmlSampler
from sift_fast.telemetry.nvtx import nvtx_backend, nvtx_mark, nvtx_range, reset_nvtx
from sift_fast.telemetry.profile import ProfileWindow, parse_profile_steps
from sift_fast.telemetry.timer import StepTimer

__all__ = [
    "NvmlSampler",
    "ProfileWindow",
    "StepTimer",
    "memory_stats",
    "nvtx_backend",
    "nvtx_mark",
    "nvtx_range",
    "parse_profile_steps",
    "reset_nvtx",
    "reset_peak",
]
