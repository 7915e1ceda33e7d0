"""Lazily-jitted Triton kernel machinery shared by the kernels in this package.

Kernels are jitted (and optionally autotuned) on first launch, once per interpret mode, so
``TRITON_INTERPRET`` (the CPU interpreter) is read at call time, not import time.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import triton

__all__ = ["LazyKernel", "autotune_enabled", "check_device", "interpreting", "lazy_jit", "triton_configs"]


def interpreting() -> bool:
    """Whether Triton runs in the CPU interpreter (``TRITON_INTERPRET=1``), read now."""
    try:
        from triton import knobs

        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):  # older triton
        return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


class LazyKernel:
    """A Triton kernel jitted (and optionally autotuned) on first launch, once per interpret mode."""

    def __init__(self, fn: Callable[..., Any], configs: Sequence[Any] | None = None, key: Sequence[str] = ()):
        self.fn, self.configs, self.key = fn, configs, list(key)
        self._cache: dict[tuple[bool, bool], Any] = {}
        functools.update_wrapper(self, fn)

    def get(self, autotune: bool = True) -> Any:
        interp = interpreting()
        tuned = autotune and self.configs is not None and not interp
        jitted = self._cache.get((interp, tuned))
        if jitted is None:
            jitted = triton.jit(self.fn)
            if tuned:
                jitted = triton.autotune(configs=list(self.configs), key=self.key)(jitted)
            self._cache[(interp, tuned)] = jitted
        return jitted


def lazy_jit(
    fn: Callable[..., Any] | None = None, *, configs: Sequence[Any] | None = None, key: Sequence[str] = ()
) -> Any:
    """Decorator form of :class:`LazyKernel`."""
    if fn is None:
        return lambda f: LazyKernel(f, configs, key)
    return LazyKernel(fn, configs, key)


def autotune_enabled() -> bool:
    """``SIFT_EXIT_AUTOTUNE=1``: autotune the statistics kernel (results then depend on the chosen config)."""
    return os.environ.get("SIFT_EXIT_AUTOTUNE", "0") == "1"


def triton_configs(configs: Sequence[tuple[int, int, int, int, int]]) -> list[Any]:
    """``triton.Config`` list from ``(BLOCK_N, BLOCK_V, BLOCK_K, num_warps, num_stages)`` tuples."""
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_V": bv, "BLOCK_K": bk}, num_warps=w, num_stages=st)
        for bn, bv, bk, w, st in configs
    ]


def check_device(*tensors: torch.Tensor | None) -> None:
    """All given tensors on one device, and that device able to run the kernels (CUDA or the interpreter)."""
    devs = {t.device for t in tensors if t is not None}
    if len(devs) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devs))}")
    dev = devs.pop()
    if dev.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"the Triton exit scorer needs CUDA tensors (got {dev}); set TRITON_INTERPRET=1 for the CPU "
            "interpreter or use the torch backend"
        )
