"""Result writers of the theory experiments: the project's atomic writers (``sift_fast.io``) under short names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sift_fast.io import atomic_path, atomic_write_json
from sift_fast.io import atomic_write_text as write_text  # noqa: F401  (re-exported)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (keys in insertion order)."""
    atomic_write_json(path, obj, sort_keys=False)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG to ``path`` atomically (the figure stays open)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
