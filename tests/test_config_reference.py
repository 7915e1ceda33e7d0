"""README's configuration reference is the generator's output (it once held the presets four times)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)


def test_readme_block_is_current() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(ref.START) == 1 and text.count(ref.END) == 1
    block = text[text.index(ref.START) + len(ref.START) : text.index(ref.END)].strip("\n")
    assert block == ref.reference(), "stale: run python scripts/config_reference.py --write README.md"
    assert block.count("Presets (each overrides") == 1


def test_every_field_once_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import fields

    from sift_fast.config import PRESETS, SECTIONS

    table = ref.reference()
    for cls in SECTIONS.values():
        for f in fields(cls):
            assert table.count(f"| `--{f.name.replace('_', '-')}` |") == 1, f.name
    for name in PRESETS:
        assert table.count(f"- `{name}`:") == 1
    doc = tmp_path / "R.md"
    doc.write_text(f"intro\n{ref.START}\nold stuff\n{ref.END}\ntail\n")
    assert ref.main(["--write", str(doc)]) == 0
    assert doc.read_text() == f"intro\n{ref.START}\n{table}\n{ref.END}\ntail\n"
    assert ref.main(["--write", str(doc)]) == 0 and doc.read_text().count("Presets (each") == 1  # idempotent
    bad = tmp_path / "B.md"
    bad.write_text("no markers\n")
    assert ref.main(["--write", str(bad)]) == 2
    assert "no '" in capsys.readouterr().err and bad.read_text() == "no markers\n"
