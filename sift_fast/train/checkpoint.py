"""Crash-safe checkpoints that never execute code.

``OUT/checkpoints/step_XXXXXXXX.pt`` is written through ``sift_fast.io`` (temp file, fsync, rename, directory
fsync), then its manifest ``step_XXXXXXXX.json`` (size and sha256), the same way. Loading verifies the
manifest, then unpickles with ``torch.load(weights_only=True)`` and an allowlist of the only non-tensor
types our state holds (numpy arrays: the numpy RNG state). A torn or corrupt newest checkpoint (size or
hash mismatch, or the loader's own error) is skipped with one warning line for the previous complete one;
a checkpoint that holds any other pickled global (``os.system`` …) is refused (:class:`CheckpointError`,
exit code 2) and nothing in it runs. The newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sift_fast.errors import UserError
from sift_fast.faults import fault_point
from sift_fast.io import atomic_path, atomic_write_json

_NAME = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(UserError):
    """A checkpoint that must not be loaded (it carries pickled code) or none usable where one is needed."""


class CorruptCheckpoint(Exception):
    """A torn or corrupt checkpoint file (skipped in favour of the previous one)."""


def _allowed_globals() -> list[Any]:
    """The non-tensor types a trainer checkpoint holds: numpy arrays (RNG state) and our ``Batch`` dataclass
    of tensors (the overlap modes' pending candidate batch). No callable that runs code on unpickling."""
    from sift_fast.data.batch import Batch

    mod = getattr(np, "_core", None) or np.core
    dtypes = {type(np.dtype(t)) for t in ("u1", "u4", "u8", "i4", "i8", "f4", "f8", "b1")}
    return [mod.multiarray._reconstruct, np.ndarray, np.dtype, *sorted(dtypes, key=str), Batch]


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:08d}.pt"


def manifest_path(path: Path) -> Path:
    return path.with_suffix(".json")


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_temps(directory: Path) -> None:
    """Temp files a killed writer left behind (``.step_….tmp.pt``): never complete, never loaded."""
    if directory.is_dir():
        for p in directory.glob(".step_*.tmp*"):
            p.unlink(missing_ok=True)


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` for ``step`` (file, then manifest) and keep only the newest ``keep`` checkpoints."""
    directory = Path(directory)
    remove_stale_temps(directory)
    path = checkpoint_path(directory, step)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        fault_point("checkpoint-write")
    fault_point("checkpoint-manifest")
    atomic_write_json(manifest_path(path), {"file": path.name, "step": step, "size": path.stat().st_size,
                                            "sha256": sha256_file(path)})
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        manifest_path(old).unlink(missing_ok=True)
    return path


def verify_manifest(path: Path) -> str | None:
    """Why ``path`` does not match its manifest (None when it matches or has no manifest)."""
    man = manifest_path(path)
    if not man.is_file():
        return None
    try:
        want = json.loads(man.read_text())
        size, digest = int(want["size"]), str(want["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"its manifest {man.name} is unreadable"
    if path.stat().st_size != size:
        return f"size {path.stat().st_size} bytes, manifest says {size}"
    if sha256_file(path) != digest:
        return "sha256 does not match its manifest"
    return None


def safe_load(path: Path, map_location: Any = "cpu", extra: tuple = ()) -> Any:
    """``torch.load`` that never runs code: ``weights_only=True`` plus the allowlist (and ``extra`` types).

    A pickled global outside the allowlist raises :class:`CheckpointError`; other load errors propagate.
    """
    try:
        with torch.serialization.safe_globals([*_allowed_globals(), *extra]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4": a foreign pickle, refused below
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if re.search(r"GLOBAL|allowed global|Unsupported operand|blocked", msg):
            found = re.search(r"GLOBAL (\S+)", msg)
            what = f"object {found.group(1)}" if found else "instruction the safe loader does not allow"
            raise CheckpointError(f"checkpoint {path} holds a pickled {what} (not plain tensors and "
                                  "containers): refusing to load it, it could run code") from None
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The trainer state in ``path`` (verified against its manifest, loaded without executing code)."""
    path = Path(path)
    bad = verify_manifest(path)
    if bad is not None:
        raise CorruptCheckpoint(f"{path}: {bad}")
    try:
        state = safe_load(path)
    except CheckpointError:
        raise
    except Exception as exc:  # truncated zip, flipped bytes, not a torch file: the loader's own error
        raise CorruptCheckpoint(f"{path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")\
            from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a sift_fast trainer checkpoint (no 'step')")
    return state


def load_newest(directory: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest complete checkpoint in ``directory``, skipping torn / corrupt ones with one warning line each.

    None when there is no checkpoint; :class:`CheckpointError` when there are some but none is usable.
    """
    directory = Path(directory)
    found = list_checkpoints(directory)
    for _, path in reversed(found):
        try:
            return load_checkpoint(path), path
        except CorruptCheckpoint as exc:
            print(f"warning: skipping torn or corrupt checkpoint {exc}; trying the previous one", file=sys.stderr)
    if found:
        raise CheckpointError(f"no complete checkpoint in {directory}: all {len(found)} are torn or corrupt")
    return None


def rng_state() -> dict[str, Any]:
    import random

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
