"""NVTX ranges and marks in the "sift_fast" domain, near-free when nothing listens.

Backend, chosen once on first use: the ``nvtx`` package (domain API, attributes cached per name;
the no-op when it reports no attached tool), else ``torch.cuda.nvtx`` when CUDA is available, else
a shared no-op object. ``SIFT_NVTX=0`` disables all annotation. Range objects are cached per name
and hold no per-call state, so ``with nvtx_range("forward"):`` allocates nothing and nests freely.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

import torch

DOMAIN = "sift_fast"
ENV_VAR = "SIFT_NVTX"

# ARGB colours for the trainer's phases, so they are told apart at a glance in Nsight Systems.
_COLORS = {
    "data": 0xFF9E9E9E,
    "score": 0xFFFFA500,
    "select": 0xFFFFD700,
    "forward": 0xFF1E88E5,
    "backward": 0xFFE53935,
    "optimizer": 0xFF43A047,
    "eval": 0xFF8E24AA,
}


def _noop() -> None:
    return None


class _Range:
    """A cached NVTX range: push on enter, pop on exit, ``mark()`` an instant event (bound callables)."""

    __slots__ = ("_push", "_pop", "_mark")

    def __init__(self, push: Callable[[], Any], pop: Callable[[], Any], mark: Callable[[], Any]) -> None:
        self._push, self._pop, self._mark = push, pop, mark

    def __enter__(self) -> None:
        self._push()

    def __exit__(self, *exc: object) -> None:
        self._pop()

    def mark(self) -> None:
        self._mark()


_NULL = _Range(_noop, _noop, _noop)  # one shared object when nothing listens
_lock = threading.Lock()
_cache: dict[str, _Range] = {}
_backend: str | None = None  # "nvtx" | "torch" | "none", resolved lazily
_domain: Any = None


def _enabled_by_env() -> bool:
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "off", "no")


def _resolve_backend() -> str:
    global _backend, _domain
    if not _enabled_by_env():
        _backend = "none"
        return _backend
    try:
        import nvtx as nvtx_pkg

        domain = nvtx_pkg.get_domain(DOMAIN)
        # get_domain() hands back a DummyDomain when no tool (nsys, ncu) is attached; NVTX_DISABLE
        # turns the package off. Either way nothing would listen, so take the free path.
        if type(domain).__name__ == "DummyDomain" or not getattr(nvtx_pkg, "enabled", lambda: True)():
            _backend = "none"
            return _backend
        _domain = domain
        _backend = "nvtx"
    except Exception:  # not installed, or a broken install: fall back quietly
        _domain = None
        _backend = "torch" if torch.cuda.is_available() else "none"
    return _backend


def _create(name: str) -> _Range:
    with _lock:
        rng = _cache.get(name)
        if rng is not None:
            return rng
        backend = _backend or _resolve_backend()
        if backend == "nvtx":  # the package's domain API, attributes (name, colour) built once per name
            attrs = _domain.get_event_attributes(message=name, color=_COLORS.get(name))
            rng = _Range(partial(_domain.push_range, attrs), _domain.pop_range, partial(_domain.mark, attrs))
        elif backend == "torch":  # global domain: torch has no domain API
            nv = torch.cuda.nvtx
            rng = _Range(partial(nv.range_push, name), nv.range_pop, partial(nv.mark, name))
        else:
            rng = _NULL
        _cache[name] = rng
        return rng


def nvtx_range(name: str) -> AbstractContextManager[None]:
    """Context manager for an NVTX push/pop range ``name`` in the "sift_fast" domain."""
    rng = _cache.get(name)
    if rng is None:
        rng = _create(name)
    return rng


def nvtx_mark(name: str) -> None:
    """Emit an instantaneous NVTX marker ``name`` in the "sift_fast" domain."""
    rng = _cache.get(name)
    if rng is None:
        rng = _create(name)
    rng.mark()


def nvtx_backend() -> str:
    """The backend in use: "nvtx", "torch" or "none" (disabled, or no tool attached)."""
    with _lock:
        return _backend or _resolve_backend()


def reset_nvtx() -> None:
    """Forget the backend and cached ranges; the next call re-reads SIFT_NVTX and re-detects."""
    global _backend, _domain
    with _lock:
        _cache.clear()
        _backend = None
        _domain = None
