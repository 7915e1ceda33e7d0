"""NVTX ranges and marks in the "sift_fast" domain, near-free when nothing listens.

Backend, chosen once on first use: the ``nvtx`` package (domain API, attributes cached per name;
the no-op when it reports no attached tool), else ``torch.cuda.nvtx`` when CUDA is available, else
a shared no-op object. ``SIFT_NVTX=0`` disables all annotation. Range objects are cached per name
and hold no per-call state, so ``with nvtx_range("forward"):`` allocates nothing and nests freely.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager
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


class _NullRange:
    """Does nothing; one shared instance serves every name when annotation is off."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        return None

    def mark(self) -> None:
        return None


class _DomainRange:
    """Push/pop on a cached ``nvtx`` domain with pre-built event attributes."""

    __slots__ = ("_push", "_pop", "_mark", "_attrs")

    def __init__(self, domain: Any, attrs: Any) -> None:
        self._push = domain.push_range
        self._pop = domain.pop_range
        self._mark = domain.mark
        self._attrs = attrs

    def __enter__(self) -> None:
        self._push(self._attrs)

    def __exit__(self, *exc: object) -> None:
        self._pop()

    def mark(self) -> None:
        self._mark(self._attrs)


class _TorchRange:
    """Push/pop through ``torch.cuda.nvtx`` (global domain; torch has no domain API)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __enter__(self) -> None:
        torch.cuda.nvtx.range_push(self._name)

    def __exit__(self, *exc: object) -> None:
        torch.cuda.nvtx.range_pop()

    def mark(self) -> None:
        torch.cuda.nvtx.mark(self._name)


_NULL = _NullRange()
_lock = threading.Lock()
_cache: dict[str, _NullRange | _DomainRange | _TorchRange] = {}
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


def _create(name: str) -> _NullRange | _DomainRange | _TorchRange:
    with _lock:
        rng = _cache.get(name)
        if rng is not None:
            return rng
        backend = _backend or _resolve_backend()
        if backend == "nvtx":
            rng = _DomainRange(_domain, _domain.get_event_attributes(message=name, color=_COLORS.get(name)))
        elif backend == "torch":
            rng = _TorchRange(name)
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
