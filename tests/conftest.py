import os

import pytest
import torch

# Triton kernels run through the interpreter on machines without a GPU; must be set before triton imports.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """GPU tests run where CUDA exists; elsewhere they are reported as skipped with the reason."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (runs on GPU machines)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """A ~150 KB slice of the bundled Wikipedia corpus, and a cache dir shared by the session."""
    from sift_fast.data import BUNDLED_CORPUS

    root = tmp_path_factory.mktemp("corpus")
    text = BUNDLED_CORPUS.read_text(encoding="utf-8")[:150_000]
    path = root / "wiki_small.txt"
    path.write_text(text, encoding="utf-8")
    return {"data": str(path), "cache_dir": str(root / "cache")}


@pytest.fixture
def micro_cfg(small_corpus, tmp_path):
    """Factory of micro-preset configs (2 layers, width 32, 512-word vocab) on the small corpus."""
    from sift_fast.config import build_config

    def make(**overrides):
        base = {"preset": "micro", "out": str(tmp_path / "run"), "log_every": 1, "eval_every": 1000,
                "max_steps": 6, **small_corpus}
        return build_config(base, overrides)

    return make
