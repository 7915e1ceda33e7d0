"""``sift-pretrain --deepspeed``: flags, process-group init and the data-parallel run.

Works under ``deepspeed --num_gpus N``, ``deepspeed --hostfile hosts --num_nodes M``, ``torchrun`` and
as a single process (then it sets RANK=0, WORLD_SIZE=1, ... itself instead of falling into
DeepSpeed's MPI discovery). Only rank 0 writes metrics, summaries and the console; every rank
reports its own errors on stderr, prefixed with its rank.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys
import warnings
from typing import Any

from sift_fast.config import Config
from sift_fast.errors import UserError

DEFAULT_DIST_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 1800.0  # rendezvous and setup (ranks may finish building their corpus cache at different times)
_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def add_deepspeed_flags(parser: argparse.ArgumentParser) -> None:
    """DeepSpeed's core flags (``deepspeed.add_config_arguments``) and ``--dist-timeout``.

    When DeepSpeed is already imported its own function adds them; otherwise the same four flags are
    declared here so that ``sift-pretrain --help`` does not pay for importing DeepSpeed
    (tests/test_distributed.py checks they match).
    """
    if "deepspeed" in sys.modules:
        sys.modules["deepspeed"].add_config_arguments(parser)
    else:
        group = parser.add_argument_group("DeepSpeed", "DeepSpeed configurations")
        group.add_argument("--deepspeed", default=False, action="store_true",
                           help="Enable DeepSpeed (helper flag for user code, no impact on DeepSpeed backend)")
        group.add_argument("--deepspeed_config", default=None, type=str, help="DeepSpeed json configuration file.")
        group.add_argument(
            "--deepscale", default=False, action="store_true",
            help="Deprecated enable DeepSpeed (helper flag for user code, no impact on DeepSpeed backend)")
        group.add_argument("--deepscale_config", default=None, type=str,
                           help="Deprecated DeepSpeed json configuration file.")
    parser.add_argument("--dist-timeout", dest="dist_timeout", type=float, default=DEFAULT_DIST_TIMEOUT_S,
                        help="seconds a collective may wait for a peer before the job fails "
                             f"(default {DEFAULT_DIST_TIMEOUT_S:g})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_launch_env() -> None:
    """Without a launcher: a world of one (DeepSpeed would otherwise try MPI discovery)."""
    if all(k in os.environ for k in _LAUNCH_ENV):
        return
    if "WORLD_SIZE" in os.environ and os.environ["WORLD_SIZE"] != "1":
        missing = [k for k in _LAUNCH_ENV if k not in os.environ]
        raise UserError(f"launcher environment incomplete: {', '.join(missing)} not set")
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(_free_port())}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def init_distributed(timeout_s: float = STARTUP_TIMEOUT_S) -> tuple[int, int, int]:
    """Initialise the process group (NCCL on CUDA, gloo on CPU); returns (rank, world_size, local_rank).

    ``timeout_s`` covers the rendezvous and setup; :func:`set_collective_timeout` tightens it for training.
    """
    import deepspeed
    import torch.distributed as dist

    ensure_launch_env()
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    if not dist.is_initialized():
        deepspeed.init_distributed(timeout=datetime.timedelta(seconds=timeout_s), verbose=False)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


def set_collective_timeout(timeout_s: float) -> None:
    """Every process group so far (the world and DeepSpeed's data-parallel clones) fails a collective after
    ``timeout_s``: a hung or vanished peer ends the job instead of blocking it (torch's default is 10-30 min)."""
    from torch.distributed import distributed_c10d as c10d

    setter = getattr(c10d, "_set_pg_timeout", None)
    groups = getattr(getattr(c10d, "_world", None), "pg_group_ranks", None)
    if setter is None or groups is None:  # pragma: no cover - older/newer torch without these internals
        return
    for group in list(groups):
        setter(datetime.timedelta(seconds=timeout_s), group)


def resolve_dist_device(cfg: Config, local_rank: int):
    import torch

    from sift_fast.train.builder import resolve_device

    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def ds_config_for(cfg: Config, args: argparse.Namespace | None, world_size: int, device_type: str) -> dict[str, Any]:
    from sift_fast.distributed.ds_config import derive_ds_config, load_ds_json

    path = getattr(args, "deepspeed_config", None) or getattr(args, "deepscale_config", None)
    user = load_ds_json(path) if path else None
    return derive_ds_config(cfg, world_size, user, device_type)


def build_data_once(cfg: Config):
    """The corpus and vocab, built by one rank of the node at a time (a file lock in the cache dir).

    The first rank builds and caches; the others load the cache, so a node's ranks share one
    tokenizer even where training one is not deterministic.
    """
    import fcntl

    from sift_fast.train.builder import build_data, default_cache_dir

    cache = default_cache_dir(cfg)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".sift_build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return build_data(cfg)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def data_fingerprint(data) -> str:
    """Tokenizer fingerprint + shapes + a strided sample of the packed arrays."""
    import hashlib

    h = hashlib.sha256(str(getattr(data.vocab, "fingerprint", data.vocab.vocab_size)).encode())
    for arr in (data.train, data.valid):
        h.update(str(arr.shape).encode())
        step = max(1, len(arr) // 256)
        h.update(arr[::step].tobytes())
    return h.hexdigest()[:16]


def check_same_data(data) -> None:
    """Every rank must hold the same corpus and vocab (else their candidate slices are not one batch)."""
    import torch.distributed as dist

    from sift_fast.errors import DataError

    prints: list = [None] * dist.get_world_size()
    dist.all_gather_object(prints, data_fingerprint(data))
    if len(set(prints)) > 1:
        raise DataError(
            f"ranks built different corpora/vocabularies (fingerprints {sorted(set(prints))}): nodes with separate "
            "caches trained their own tokenizers; build the cache once and share it (--cache-dir on a shared "
            "filesystem, or a fixed --vocab file)"
        )


def build_trainer(cfg: Config, args: argparse.Namespace | None = None, *, ds_config: dict[str, Any] | None = None,
                  data=None, console=None):
    """A Trainer on this rank: DeepSpeed engine, sharded candidate stream, selection scope wired in."""
    from functools import partial

    from sift_fast.distributed.engine import DeepSpeedEngine
    from sift_fast.distributed.selection import GlobalSelection, sharded_loader_factory
    from sift_fast.train.loop import Trainer

    ensure_launch_env()
    local_rank = int(os.environ["LOCAL_RANK"])
    device = resolve_dist_device(cfg, local_rank)
    # user errors first (no process group yet), then the data: rank-uneven setup time stays outside collectives
    ds_config = ds_config or ds_config_for(cfg, args, int(os.environ["WORLD_SIZE"]), device.type)
    data = data or build_data_once(cfg)
    timeout = getattr(args, "dist_timeout", DEFAULT_DIST_TIMEOUT_S)
    rank, world, local_rank = init_distributed(max(timeout, STARTUP_TIMEOUT_S))
    check_same_data(data)
    trainer = Trainer(cfg, data=data, device=device, console=console,
                      engine_factory=partial(DeepSpeedEngine, ds_config=ds_config),
                      loader_factory=sharded_loader_factory(rank, world))
    set_collective_timeout(timeout)  # after DeepSpeed created its groups
    if cfg.sift.selection_scope == "global" and world > 1:
        trainer.select_fn = GlobalSelection(rank, world, device, data.vocab.pad_id, cfg.train.seed,
                                            step_fn=lambda: trainer.step, build=trainer.loader.build)
    return trainer


def describe_failure(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    low = str(exc).lower()
    if any(s in low for s in ("gloo", "nccl", "connection", "timed out", "timeout", "peer")):
        text += " (a collective failed: another rank probably died or hung; see its log)"
    return text


def run_with_error_report(fn, *a, **kw):
    """``fn(*a, **kw)``; an unexpected exception is first reported on stderr as one line naming this rank."""
    try:
        return fn(*a, **kw)
    except UserError:
        raise
    except BaseException as exc:
        rank = os.environ.get("RANK", "0")
        print(f"sift-pretrain: rank {rank}: error: {describe_failure(exc)}", file=sys.stderr, flush=True)
        raise


def die_with_launcher() -> None:
    """Under a launcher (``LOCAL_RANK`` set), on Linux: this rank gets ``LAUNCHER_GONE`` (SIGUSR2) when its
    launcher process dies (``PR_SET_PDEATHSIG``), so a killed ``torchrun`` leaves no orphan ranks training on.
    Every rank of the node gets it: in training that is the collective stop (checkpoint at the next log flush,
    exit 0); before training starts, the signal's default action ends the rank."""
    if not sys.platform.startswith("linux") or "LOCAL_RANK" not in os.environ:
        return
    import ctypes

    from sift_fast.train.loop import LAUNCHER_GONE

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(LAUNCHER_GONE), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() == 1:  # the launcher died before the call
        os.kill(os.getpid(), LAUNCHER_GONE)


def run_deepspeed(cfg: Config, args: argparse.Namespace | None = None) -> dict[str, Any] | None:
    """Train on this rank; returns the summary on rank 0 and None elsewhere."""
    die_with_launcher()
    trainer = run_with_error_report(build_trainer, cfg, args)
    summary = run_with_error_report(trainer.run)
    shutdown()
    return summary if trainer.rank0 else None


def shutdown() -> None:
    """Collect garbage, barrier, destroy the process group if one is up: every entry point's last call.

    A rank that reaches interpreter finalization with gloo work still referenced (a DDP reducer, a trainer)
    can abort ("terminate called without an active exception", SIGABRT): seen in 1 of ~8 two-rank HF
    Trainer runs; with the trainer dropped (``del``) before this call, 0 of 30.
    """
    import gc

    import torch.distributed as dist

    gc.collect()

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
