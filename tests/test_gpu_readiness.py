"""What the GPU throughput goal rests on, checked on CPU: SDPA attention, fused AdamW on CUDA, and no
device→host sync in the step beyond the one SIFT's host-side selection may need (the scores' copy).

A sync is a value read back from the device (``item``, ``tolist``, ``bool``, ``cpu``, ``nonzero``, ...).
On CPU there is no device, so the check tracks provenance instead: every tensor computed from the model's
parameters counts as a device tensor (host batch data, built and known on the host, does not), and a
sync-type call on one of them is a host sync on a GPU.
"""

import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from sift_fast.train.loop import Trainer
from sift_fast.train.optim import build_optimizer

SYNCS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__,
         torch.Tensor.nonzero, torch.nonzero, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.any,
         torch.Tensor.all, torch.Tensor.masked_select, torch.masked_select, torch.Tensor.__index__}
# TorchEngine.step's non-finite-gradient guard reads the flag on the host only off CUDA; on CUDA fused
# AdamW takes it as ``found_inf`` on the device (no sync), so that one line is not a GPU sync
CPU_ONLY_GUARD = "elif bool(ok):"


class DeviceSyncs(TorchFunctionMode):
    """Counts sync-type calls on tensors derived from ``roots`` (taint follows every torch function)."""

    def __init__(self, roots) -> None:
        super().__init__()
        self.tainted = {id(t) for t in roots}
        self.keep = list(roots)  # ids stay unique while the objects live
        self.syncs: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        flat, _ = tree_flatten((args, kwargs or {}))
        hit = any(isinstance(t, torch.Tensor) and id(t) in self.tainted for t in flat)
        if hit and func in SYNCS:
            caller = traceback.extract_stack(limit=2)[0]
            if CPU_ONLY_GUARD not in (caller.line or ""):
                self.syncs.append(getattr(func, "__name__", str(func)))
        out = func(*args, **(kwargs or {}))
        if hit:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.tainted.add(id(t))
                    self.keep.append(t)
        return out


def syncs_of_step(cfg) -> list[str]:
    tr = Trainer(cfg)
    tr.train_step()  # the first step builds optimizer state
    tr.step += 1
    mode = DeviceSyncs(list(tr.engine.module.parameters()))
    with mode:
        tr.train_step()
    return mode.syncs


def test_baseline_step_has_no_device_sync(micro_cfg):
    assert syncs_of_step(micro_cfg(selection="none", overlap="off")) == []


def test_sift_step_has_at_most_the_score_copy(micro_cfg):
    # top-k runs on the host over the copied scores: at most that D2H copy per step (the overlap modes hide it)
    assert syncs_of_step(micro_cfg(selection="entropy", overlap="off")) in ([], ["cpu"])


def test_tracker_sees_a_sync():
    w = torch.nn.Parameter(torch.ones(3))
    mode = DeviceSyncs([w])
    with mode:
        (w * 2).sum().item()
        torch.ones(2).tolist()  # host data: not a device sync
    assert mode.syncs == ["item"]


def test_cpu_only_guard_is_the_engine_line():
    import inspect

    from sift_fast.train.engine import TorchEngine

    src = inspect.getsource(TorchEngine.step)
    assert CPU_ONLY_GUARD in src and "found_inf" in src


def test_attention_runs_through_sdpa(micro_cfg):
    tr = Trainer(micro_cfg())
    enc = tr.engine.module
    impls = {getattr(m.config, "_attn_implementation", None) for m in enc.modules() if hasattr(m, "config")}
    assert impls == {"sdpa"}


def test_adamw_is_fused_on_cuda_foreach_on_cpu(micro_cfg):
    cfg = micro_cfg()
    model = torch.nn.Linear(4, 4)
    cuda = build_optimizer(model, cfg.optim, torch.device("cuda"))  # constructing needs no GPU
    cpu = build_optimizer(model, cfg.optim, torch.device("cpu"))
    assert isinstance(cuda, torch.optim.AdamW) and cuda.defaults["fused"] is True
    assert cpu.defaults["foreach"] is True and not cpu.defaults["fused"]
