"""Test-only fault injection: ``SIFT_FAULT_POINT=NAME:N[:SIGNAL]`` sends SIGNAL (default KILL) to this
process the N-th time the code passes :func:`fault_point` ``NAME``. Unset (the normal case), it costs a
dict lookup. Named points: ``step`` (after an optimizer step), ``eval`` (after an eval, before its record),
``metrics-flush`` (half of a flush's records written), ``checkpoint-write`` (checkpoint temp file written,
not yet renamed), ``checkpoint-manifest`` (checkpoint renamed, manifest not yet written).
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def _parse(spec: str) -> tuple[str, int, int]:
    name, _, rest = spec.partition(":")
    count, _, sig = rest.partition(":")
    return name, int(count or 1), getattr(signal, f"SIG{sig or 'KILL'}")


def fault_point(name: str) -> None:
    """Signal this process here if ``SIFT_FAULT_POINT`` names this point and its hit count (tests only)."""
    spec = os.environ.get("SIFT_FAULT_POINT")
    if not spec:
        return
    for one in spec.split(","):
        want, count, sig = _parse(one)
        if want == name:
            _hits[name] = _hits.get(name, 0) + 1
            if _hits[name] == count:
                os.kill(os.getpid(), sig)
