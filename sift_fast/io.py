"""Atomic file writes: a temp file beside the target, fsynced, renamed over it, then the directory fsynced.

Every writer in the project goes through :func:`atomic_path` (or :func:`atomic_open` on top of it), so a
crash or a failed write never leaves a half-written file, a failed write never leaves its temp file
behind, and the new file gets the usual permissions (``0666 & ~umask``, not ``mkstemp``'s ``0600``).
Nothing here imports the trainer: data, CLI and bench code use it directly. :func:`read_utf8` is the one
checked text reader (corpora, vocab and tokenizer files): a bad file is one ``DataError`` line.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sift_fast.errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path`` (same suffix); on a clean exit it is fsynced and renamed over ``path``.

    On an exception the temp file is removed and ``path`` is left as it was. For writers that take a
    file name (``torch.save``, ``Figure.savefig``, ``Tokenizer.save``, a profiler's trace export).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` (``w`` or ``wb``) that replaces ``path`` only when the block exits cleanly."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; on a clean exit its files are fsynced and it replaces ``path``
    (a previous ``path`` is moved aside, then removed). On an exception the temp directory is removed and
    ``path`` is left as it was. For writers of a whole directory (``save_pretrained``)."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old is not None:
                os.replace(old, path)
                old = None
            raise
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 2, sort_keys: bool = True, **kwargs: Any) -> None:
    """Write ``obj`` as JSON (indented, keys sorted by default, trailing newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, **kwargs) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_savefig(fig: Any, path: str | Path, dpi: int = 100, **kwargs: Any) -> None:
    """Save a matplotlib figure to ``path`` atomically (format from the suffix), then close the figure."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, **kwargs)
    finally:
        plt.close(fig)


def atomic_copy(src: str | Path, dest: str | Path) -> None:
    """Copy ``src`` to ``dest`` atomically."""
    import shutil

    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def check_writable_dir(path: str | Path, what: str) -> None:
    """Create ``path`` if needed and check a file can be written there; a ``ConfigError`` line naming ``what``."""
    from sift_fast.errors import ConfigError

    path = Path(path).absolute()
    created = [p for p in (path, *path.parents) if not p.exists()]
    if any(p.exists() and not p.is_dir() for p in (path, *path.parents)):
        raise ConfigError(f"{what} {path}: a parent is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path, prefix=".write-check.")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"{what} {path} is not writable: {exc.strerror or exc}") from None
    finally:  # leave nothing behind: the run creates the directory when it first writes
        for p in created:
            with contextlib.suppress(OSError):
                p.rmdir()


def read_utf8(path: str | Path, what: str, expected: str = "text") -> str:
    """The UTF-8 text of ``path`` (a ``what``: corpus, vocab file); a ``DataError`` if unreadable, binary, not UTF-8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if b"\x00" in raw:
        raise DataError(f"{what} {path} is a binary file, not {expected}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
