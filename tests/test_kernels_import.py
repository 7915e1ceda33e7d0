"""The top-level ``kernels/`` directory never shadows Hugging Face's ``kernels`` package.

``kernels/`` is installed as ``sift_fast.kernels``; with the repo root on ``sys.path`` (``python -m pytest``,
bench scripts, a shell in the checkout) a plain ``import kernels`` — which ``transformers`` does for its hub
kernels — must still get the installed package, or ``transformers.BertForMaskedLM`` fails to import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, *path: Path, flags: tuple[str, ...] = ()) -> str:
    prelude = f"import sys; sys.path[:0] = {[str(p) for p in path]!r}; "
    out = subprocess.run([sys.executable, *flags, "-c", prelude + code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_top_level_import_defers_to_the_installed_package(tmp_path: Path) -> None:
    fake = tmp_path / "kernels"
    fake.mkdir()
    (fake / "__init__.py").write_text("MARK = 42\n")
    (fake / "layer.py").write_text("WHO = 'hub'\n")
    out = _run("import kernels, kernels.layer; print(kernels.MARK, kernels.layer.WHO, kernels.__file__)",
               ROOT, tmp_path)
    assert out.split() == ["42", "hub", str(fake / "__init__.py")]


def test_without_another_kernels_package_the_directory_imports_plainly() -> None:
    out = _run("import kernels; print(kernels.__file__)", ROOT, flags=("-S",))  # -S: no site-packages
    assert out == str(ROOT / "kernels" / "__init__.py")


def test_transformers_and_the_triton_kernels_import_with_the_root_first() -> None:
    out = _run("import transformers, sift_fast.kernels.topk as t; transformers.BertForMaskedLM; print(t.__file__)",
               ROOT)
    assert out == str(ROOT / "kernels" / "topk.py")
