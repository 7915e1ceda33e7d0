"""Run outputs: metrics.jsonl (one line per step and per eval), the console log line, time-to-accuracy."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from sift_fast.io import atomic_write_text


class TensorBoardSink:
    """The metrics.jsonl records as TensorBoard scalars, tag ``train/<field>`` (step records) or
    ``eval/<field>`` (eval records), the same field names, at the record's step. Records are written at
    the log flush (they are host floats by then: no device sync). A resumed run purges the steps after
    its checkpoint, as metrics.jsonl is truncated."""

    PREFIX = {"step": "train", "eval": "eval"}

    def __init__(self, logdir: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from sift_fast.errors import ConfigError

            raise ConfigError(f"--tensorboard {logdir}: the tensorboard package is not installed "
                              "(pip install tensorboard, or the dev extra)") from None
        self._cls, self.logdir = SummaryWriter, logdir
        self.purge_step: int | None = None
        self._writer: Any = None
        self._pending: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        if record.get("type") in self.PREFIX:
            self._pending.append(record)

    def flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            self._writer = self._cls(self.logdir, purge_step=self.purge_step)
        for rec in self._pending:
            prefix = self.PREFIX[rec["type"]]
            for key, value in rec.items():
                if key not in ("step", "type") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{prefix}/{key}", value, global_step=rec["step"])
        self._pending.clear()
        self._writer.flush()

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class MetricsWriter:
    """Appends JSON lines to ``OUT/metrics.jsonl`` (and to a :class:`TensorBoardSink`); disabled on non-zero
    ranks."""

    def __init__(self, path: Path, enabled: bool = True, sink: TensorBoardSink | None = None) -> None:
        self.path, self.enabled = path, enabled
        self.sink = sink if enabled else None
        self._file: TextIO | None = None

    def truncate_after(self, step: int) -> None:
        """On resume: drop records of steps after the checkpoint (they will be written again).

        A torn last line (the process was killed inside a write) is dropped too.
        """
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for ln in self.path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(ln)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("step", 0) <= step:
                kept.append(ln)
        atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))

    def reset(self) -> None:
        """A fresh run: no earlier records."""
        if self.enabled:
            self.path.unlink(missing_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a")  # noqa: SIM115 - kept open for the run
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        if self.sink is not None:
            self.sink.add(record)

    def flush(self, durable: bool = False) -> None:
        """Hand the records to the OS (survives a killed process); ``durable``: fsync (survives power loss)."""
        if self._file is not None:
            self._file.flush()
            if durable:
                os.fsync(self._file.fileno())
        if self.sink is not None:
            self.sink.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.sink is not None:
            self.sink.close()


class TimeToTarget:
    """Records when validation accuracy first reaches each target."""

    def __init__(self, targets: tuple[float, ...]) -> None:
        self.targets = targets
        self.reached: dict[str, dict[str, float]] = {}

    def update(self, acc: float, record: dict[str, Any]) -> list[float]:
        newly = []
        for t in self.targets:
            key = f"{t:g}"
            if key not in self.reached and acc >= t:
                self.reached[key] = {k: record[k] for k in ("step", "wall_s", "samples", "backprop_samples")}
                newly.append(t)
        return newly

    def state_dict(self) -> dict[str, Any]:
        return {"reached": self.reached}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reached = dict(state["reached"])


def format_step_line(rec: dict[str, Any], max_steps: int) -> str:
    """torchtitan-style one-liner: loss, kept-score ratio, samples/s, scoring share, lr, memory."""
    parts = [f"step {rec['step']:>6}/{max_steps}", f"loss {rec['loss']:.4f}"]
    if rec.get("kept_score_ratio") is not None:
        parts.append(f"kept/cand {rec['kept_score_ratio']:.3f}")
    parts += [
        f"samples/s {rec['samples_per_s']:.1f}",
        f"bp/s {rec['backprop_samples_per_s']:.1f}",
        f"score {100 * rec['score_share']:.1f}%"
        + (f" ({1000 * rec['score_time_s']:.0f}ms)" if rec.get("score_time_s") else ""),
    ]
    if rec.get("score_hidden_share"):
        parts.append(f"hidden {100 * rec['score_hidden_share']:.0f}%")
    parts.append(f"lr {rec['lr']:.2e}")
    mem = rec.get("mem_mib")
    if mem is not None:
        parts.append(f"mem {mem / 1024:.2f}GiB")
    return "  ".join(parts)


class Console:
    """Plain log lines, plus a one-line progress indicator when stderr is a terminal."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and self.stream.isatty()

    def log(self, line: str) -> None:
        if self.enabled:
            if self.tty:
                self.stream.write("\r\033[K")
            print(line, file=self.stream, flush=True)

    def progress(self, step: int, max_steps: int, loss: float | None) -> None:
        if self.tty:
            width = 30
            done = int(width * step / max(1, max_steps))
            tail = f" loss {loss:.3f}" if loss is not None else ""
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{max_steps}{tail}")
            self.stream.flush()
