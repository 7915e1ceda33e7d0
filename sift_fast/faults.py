"""Test-only fault injection: ``SIFT_FAULT_POINT=NAME:N[:SIGNAL][@RANK]`` sends SIGNAL (default KILL) to this
process the N-th time the code passes :func:`fault_point` ``NAME`` (with ``@RANK``: only on that distributed
rank, ``RANK`` from the launcher's environment). Several specs are comma-separated. With ``SIFT_FAULT_LOG``
set, the point, rank and time are appended to that file first (a test measures from it how fast the job
ended). Unset (the normal case), it costs a dict lookup. Named points: ``step`` (after an optimizer step),
``eval`` (after an eval, before its record), ``metrics-flush`` (half of a flush's records written),
``checkpoint-write`` (single process: the checkpoint's temp file written, not yet renamed; DeepSpeed: this
rank's trainer state written, DeepSpeed's files not yet; SiftTrainer: the Trainer's model, optimizer and RNG
files written, the SIFT state and ``trainer_state.json`` not yet), ``checkpoint-manifest`` (the checkpoint
files complete, this rank's manifest not yet written).
"""

from __future__ import annotations

import os
import signal
import time

_hits: dict[str, int] = {}


def _parse(spec: str) -> tuple[str, int, int, str | None]:
    spec, _, rank = spec.partition("@")
    name, _, rest = spec.partition(":")
    count, _, sig = rest.partition(":")
    return name, int(count or 1), getattr(signal, f"SIG{sig or 'KILL'}"), rank or None


def fault_point(name: str) -> None:
    """Signal this process here if ``SIFT_FAULT_POINT`` names this point and its hit count (tests only)."""
    spec = os.environ.get("SIFT_FAULT_POINT")
    if not spec:
        return
    mine = [(one, *_parse(one)) for one in spec.split(",")]
    mine = [m for m in mine if m[1] == name and m[4] in (None, os.environ.get("RANK", "0"))]
    if not mine:
        return
    _hits[name] = _hits.get(name, 0) + 1  # once per pass, however many specs name this point
    for one, _, count, sig, _ in mine:
        if _hits[name] == count:
            if log := os.environ.get("SIFT_FAULT_LOG"):
                with open(log, "a") as f:
                    f.write(f"{one} rank {os.environ.get('RANK', '0')} {time.time():.3f}\n")
            os.kill(os.getpid(), sig)
