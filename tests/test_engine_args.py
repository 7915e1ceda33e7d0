"""TorchEngine and DeepSpeedEngine hand the model identical forward arguments (padded and unpadded batch).

DeepSpeed runs as one rank on the CPU (``DS_ACCELERATOR=cpu``, gloo) in a subprocess (this file's ``main``),
so the pytest process keeps no process group. An unpadded batch must reach the model with
``attention_mask=None`` under both engines: HF otherwise checks ``mask.all()`` on the device, a host sync.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
VOCAB, PAD = 512, 0


def batches(seq_len: int):
    """An unpadded and a padded micro batch (ids >= 5, so pad/CLS/... appear only where placed)."""
    from sift_fast.data.batch import make_batch

    rng = np.random.default_rng(0)
    ids = rng.integers(5, VOCAB, (4, seq_len))
    labels = np.full_like(ids, -100)
    labels[:, 1::5] = ids[:, 1::5]
    full = make_batch(ids, labels, np.arange(4), PAD)
    padded_ids = ids.copy()
    padded_ids[1, seq_len // 2:] = PAD
    labels[1, seq_len // 2:] = -100
    return {"unpadded": full, "padded": make_batch(padded_ids, labels, np.arange(4), PAD)}


def recorded_args(engine, model, batch) -> list:
    """The positional arguments (and kwargs) the encoder's forward receives from ``engine.forward``."""
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    try:
        engine.forward(batch)
    finally:
        handle.remove()
    assert len(seen) == 1
    args, kwargs = seen[0]
    assert not kwargs
    return [None if a is None else a.tolist() for a in args]


def main(out: str) -> None:
    """Subprocess: both engines over the same micro model, one DeepSpeed rank (ZeRO 0); writes the args."""
    from sift_fast.config import build_config
    from sift_fast.distributed.ds_config import derive_ds_config, load_ds_json
    from sift_fast.distributed.engine import DeepSpeedEngine
    from sift_fast.distributed.launch import init_distributed
    from sift_fast.models.hf import build_model
    from sift_fast.train.engine import TorchEngine

    torch.manual_seed(0)
    cfg = build_config({"preset": "micro", "num_threads": 1, "precision": "fp32"})
    cpu = torch.device("cpu")
    plain = build_model(cfg.model, VOCAB, cfg.data.seq_len, PAD)
    twin = build_model(cfg.model, VOCAB, cfg.data.seq_len, PAD)
    twin.load_state_dict(plain.state_dict())
    init_distributed()
    ds = DeepSpeedEngine(twin, cfg, cpu, ds_config=derive_ds_config(
        cfg, 1, load_ds_json(ROOT / "configs" / "ds_zero0.json"), "cpu"))
    torch_engine = TorchEngine(plain, cfg, cpu)
    res = {}
    for name, batch in batches(cfg.data.seq_len).items():
        res[name] = {"torch": recorded_args(torch_engine, plain, batch),
                     "deepspeed": recorded_args(ds, ds.module, batch),
                     "attention_mask": batch.attention_mask.tolist()}
    Path(out).write_text(json.dumps(res))


@pytest.mark.slow
def test_both_engines_pass_the_model_the_same_arguments(tmp_path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "args.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for name in ("unpadded", "padded"):
        t, d = res[name]["torch"], res[name]["deepspeed"]
        assert len(t) == len(d) == 4 and t == d
    assert res["unpadded"]["torch"][1] is None  # no mask: SDPA unmasked, no host sync
    assert res["padded"]["torch"][1] == res["padded"]["attention_mask"]
    assert 0 in sum(res["padded"]["attention_mask"], [])


if __name__ == "__main__":
    main(sys.argv[1])
