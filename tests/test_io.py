"""sift_fast.io: atomic writes replace whole files, leave nothing behind on failure, keep normal permissions."""

import json
import os

import pytest
import torch

from sift_fast.io import (
    atomic_open,
    atomic_path,
    atomic_savefig,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
)


def _leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_text_json_torch_roundtrip_and_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a" / "t.txt", "one\n")
    atomic_write_text(tmp_path / "a" / "t.txt", "two\n")
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1, 2]})
    atomic_torch_save({"x": torch.arange(3)}, tmp_path / "c.pt")
    assert (tmp_path / "a" / "t.txt").read_text() == "two\n"
    assert (tmp_path / "j.json").read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2) + "\n"
    assert torch.equal(torch.load(tmp_path / "c.pt")["x"], torch.arange(3))
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "a") == []


def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "keep.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target, "w") as f:
        f.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists() and _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="mode"), atomic_open(target, "a"):
        pass


def test_permissions_follow_the_umask_not_mkstemp(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "p.txt").stat().st_mode & 0o777 == 0o644


def test_atomic_path_keeps_the_suffix_for_name_based_writers(tmp_path):
    with atomic_path(tmp_path / "fig.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    assert (tmp_path / "fig.png").read_bytes() == b"png"


def test_savefig_failure_leaves_no_temp_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    with pytest.raises(ValueError):
        atomic_savefig(fig, tmp_path / "x.unknownformat")
    assert _leftovers(tmp_path) == [] and not plt.fignum_exists(fig.number)
    fig = plt.figure()
    atomic_savefig(fig, tmp_path / "ok.png")
    assert (tmp_path / "ok.png").read_bytes()[:4] == b"\x89PNG" and _leftovers(tmp_path) == []
