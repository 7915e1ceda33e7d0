"""The training loop: fetch → score (now, or already) → select → forward/backward → update → log; eval, checkpoints.

Overlap modes (``train.overlap``) follow one rule — *the candidate batch of step t+1 is scored with
the weights of step t, before step t's optimizer update* — executed either in order
(``sequential-stale``, any device) or on a side CUDA stream during step t's backward (``on``). Each
mode is a small strategy object (``sift_fast.train.overlap``: ``Inline`` for ``off``, ``Stale``,
``SideStream``) with three hooks the step calls: ``fetch``, ``before_forward``, ``after_backward``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sift_fast.config import Config
from sift_fast.errors import ConfigError, TrainingHalted, UserError
from sift_fast.faults import fault_point
from sift_fast.io import atomic_path, atomic_write_json, check_writable_dir
from sift_fast.selection import Selector
from sift_fast.telemetry import NvmlSampler, ProfileWindow, StepTimer, memory_stats, parse_profile_steps
from sift_fast.train.builder import (
    DataBundle,
    build_data,
    build_model_for,
    check_fits_memory,
    resolve_device,
    seed_everything,
)
from sift_fast.train.checkpoint import rng_state, set_rng_state
from sift_fast.train.engine import TorchEngine
from sift_fast.train.evaluate import evaluate
from sift_fast.train.metrics import Console, MetricsWriter, TensorBoardSink, TimeToTarget, format_step_line
from sift_fast.train.optim import horizon_progress
from sift_fast.train.overlap import build_overlap, overlap_strategy, resolve_pending
from sift_fast.train.step import StepResult, sift_step

EngineFactory = Callable[[Any, Config, torch.device], Any]
# what a rank receives when its launcher process dies (``distributed.launch.die_with_launcher``); Linux sends it
# once per exiting launcher thread, so its handler is idempotent, unlike SIGTERM's (a second one exits at once)
LAUNCHER_GONE = signal.SIGUSR2


def resolve_overlap(mode: str, device: torch.device) -> str:
    if mode == "auto":
        return "on" if device.type == "cuda" else "off"
    if mode == "on" and device.type != "cuda":
        return "sequential-stale"  # same rule, executed in order (no streams on CPU)
    return mode


class Trainer:
    """One run of ``sift-pretrain``. ``engine_factory`` swaps in DeepSpeed; ``select_fn`` global selection."""

    def __init__(self, cfg: Config, *, data: DataBundle | None = None, engine_factory: EngineFactory | None = None,
                 device: torch.device | None = None, console: Console | None = None,
                 loader_factory: Callable[..., Any] | None = None) -> None:
        from sift_fast.data import CandidateLoader, MLMMasker, validation_batches
        from sift_fast.data.prefetch import maybe_prefetch

        self.cfg = cfg
        self.out = Path(cfg.train.out)
        tb = None  # --tensorboard: checked here, before any data or model is built
        if int(os.environ.get("RANK", "0") or 0) == 0:
            check_writable_dir(self.out, "--out")
            if cfg.train.tensorboard:
                check_writable_dir(cfg.train.tensorboard, "--tensorboard")
                tb = TensorBoardSink(cfg.train.tensorboard)
            if cfg.train.export_hf:
                from sift_fast.export import check_export_target

                check_export_target(cfg.train.export_hf, "--export-hf")
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        self.device = device or resolve_device(cfg.train.device)
        check_fits_memory(cfg, self.device)
        seed_everything(cfg.train.seed)
        self.data = data or build_data(cfg)
        vocab = self.data.vocab
        model = build_model_for(cfg, vocab)
        self.engine = (engine_factory or TorchEngine)(model, cfg, self.device)
        self.rank0 = self.engine.rank == 0
        masker = MLMMasker(vocab.vocab_size, vocab.mask_id, vocab.special_ids, mask_prob=cfg.data.mask_prob,
                           seed=cfg.train.seed)
        self.loader = (loader_factory or CandidateLoader)(self.data.train, cfg.sift.candidates, masker, vocab.pad_id,
                                                          seed=cfg.train.seed)
        self.loader = maybe_prefetch(self.loader, cfg.data.prefetch, self.device.type)  # batches built ahead
        eval_masker = MLMMasker(vocab.vocab_size, vocab.mask_id, vocab.special_ids, mask_prob=cfg.data.mask_prob,
                                seed=12345)
        self.val_batches = validation_batches(self.data.valid, cfg.train.eval_batch_size, eval_masker, vocab.pad_id)
        self.selector = Selector(cfg.sift, seed=cfg.train.seed + 1000 * self.engine.rank)
        self.exit_layer = cfg.sift.exit_layer if isinstance(cfg.sift.exit_layer, int) else 1
        self.overlap = resolve_overlap(cfg.train.overlap, self.device)
        if cfg.train.clock == "process" and self.device.type != "cpu":
            raise ConfigError("clock=process measures CPU time and is meaningful only with device=cpu")
        self.clock = time.process_time if cfg.train.clock == "process" else time.perf_counter
        self.select_fn = None  # global selection across data-parallel ranks plugs in here
        # called after every step as hook(trainer, result): selection telemetry, automatic exit layer
        self.step_hooks: list[Callable[[Trainer, StepResult], None]] = []
        if cfg.train.telemetry_every or cfg.sift.exit_layer == "auto":
            from sift_fast.train.telemetry_hook import install

            install(self)
        self.adaptive = None  # adaptive keep from the gradient noise scale (train/noise.py)
        # nothing to adapt when keep already backprops every candidate (keep = 1 stays bit-identical to the baseline)
        if cfg.sift.adaptive and cfg.sift.selection != "none" and \
                cfg.sift.backprop_size < cfg.sift.candidates:
            if hasattr(self.engine, "grad_sq_norm"):
                from sift_fast.train.noise import AdaptiveKeep

                self.adaptive = AdaptiveKeep(cfg, vocab.vocab_size)
                self.selector.dynamic_k = self.adaptive.k
            else:
                print("note: adaptive_keep=noise needs the single-process engine; keeping keep fixed",
                      file=sys.stderr)
        self.timer = StepTimer(self.device)
        self.metrics = MetricsWriter(self.out / "metrics.jsonl", enabled=self.rank0, sink=tb)
        self.console = console or Console(enabled=self.rank0)
        self.overlap, self.overlap_scorer = build_overlap(self.overlap, self.engine, self.device, self.console.log)
        self.ttt = TimeToTarget(cfg.train.targets)
        self.step = 0
        self.train_time = 0.0
        self.samples = 0
        self.backprop_samples = 0
        self.pending: tuple[Any, torch.Tensor | None] | None = None  # (next host batch, its stale scores)
        self.last_eval: dict[str, float] = {}
        self.bad_run = 0  # consecutive steps with a non-finite loss or gradient norm (update not applied)
        self.bad_total = 0
        self.stop_signal: int | None = None  # SIGTERM / SIGINT received: checkpoint after this step, exit 0
        self.stop_agreed = False  # under DeepSpeed: every rank has agreed to stop (at a log flush)
        self.budget_agreed = False  # under DeepSpeed: some rank's clock reached the time limit (at a log flush)
        self.paused = False  # stopped at --stop-after-s, before the horizon: --resume continues
        self.lr_agreed = 0.0  # under DeepSpeed: the furthest rank's spent budget fraction (lr_horizon auto/budget)

    # --- checkpoint -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "train_time": self.train_time, "samples": self.samples,
            "backprop_samples": self.backprop_samples, "exit_layer": self.exit_layer,
            "engine": self.engine.state_dict(), "loader": self.loader.state_dict(),
            "selector": self.selector.state_dict(), "ttt": self.ttt.state_dict(), "rng": rng_state(),
            "pending": resolve_pending(self.pending), "config": self.cfg.to_dict(),
            "hooks": {h.name: h.state_dict() for h in self.step_hooks if hasattr(h, "state_dict")},
            "adaptive": self.adaptive.state_dict() if self.adaptive is not None else None,
            "bad_steps": {"run": self.bad_run, "total": self.bad_total}, "last_eval": self.last_eval,
            "hf_config": self.hf_config_json(),
        }

    def hf_config_json(self) -> str:
        """The Hugging Face config of the model, its class named (what sift-export rebuilds the model from)."""
        hf = self.engine.module.hf
        return json.dumps({**json.loads(hf.config.to_json_string()), "architectures": [type(hf).__name__]})

    # what a resumed run must share with its checkpoint (the rest, e.g. max_steps or lr, may change)
    RESUME_MUST_MATCH = {"model": None, "sift": None,
                         "data": ("corpus", "vocab", "vocab_size", "seq_len", "text_key", "valid_fraction",
                                  "max_train_tokens", "mask_prob"),
                         # the param groups; a selection step's LR rule (a changed default must not switch it mid-run)
                         "optim": ("lr_batch_scale_params", "lr_batch_scale")}
    # the value a key has in a checkpoint written before the key existed
    RESUME_OLD_DEFAULTS = {"lr_batch_scale_params": "all", "lr_batch_scale": "none"}
    # what a baseline (selection none on both sides) checks instead, per section: it uses no other selection
    # setting, so e.g. a baseline started under another select_until or lr_batch_scale default resumes
    RESUME_BASELINE = {"sift": ("selection", "candidates"), "optim": ("lr_batch_scale_params",)}

    def check_resumable(self, state: dict[str, Any], path: Path) -> None:
        """A ``ConfigError`` line when the checkpoint's model, tokenizer, selection or LR-scale / param-group
        config differs from this run's."""
        saved, mine = state.get("config") or {}, self.cfg.to_dict()
        diffs = []
        baseline = (saved.get("sift") or {}).get("selection") == mine["sift"]["selection"] == "none"
        for section, keys in self.RESUME_MUST_MATCH.items():
            a, b = saved.get(section) or {}, mine[section]
            if baseline:
                keys = self.RESUME_BASELINE.get(section, keys)
            for k in keys or b:
                old = a.get(k, self.RESUME_OLD_DEFAULTS.get(k, b[k])) if a else b[k]
                if old != b[k]:
                    diffs.append(f"{k}={old!r} (this run: {b[k]!r})")
        if diffs:
            raise ConfigError(f"--resume: checkpoint {path} was written with {', '.join(diffs[:4])}"
                              f"{' …' if len(diffs) > 4 else ''}; resume with the same model, tokenizer, "
                              "selection and --lr-batch-scale(-params) settings, or use a new --out")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.train_time = state["step"], state["train_time"]
        self.samples, self.backprop_samples = state["samples"], state["backprop_samples"]
        self.exit_layer = state["exit_layer"]
        self.engine.load_state_dict(state["engine"])
        self.loader.load_state_dict(state["loader"])
        self.selector.load_state_dict(state["selector"])
        self.ttt.load_state_dict(state["ttt"])
        self.pending = state["pending"]
        self.last_eval = dict(state.get("last_eval") or {})
        bad = state.get("bad_steps") or {}
        self.bad_run, self.bad_total = int(bad.get("run", 0)), int(bad.get("total", 0))
        set_rng_state(state["rng"])
        if self.adaptive is not None and state.get("adaptive"):
            self.adaptive.load_state_dict(state["adaptive"])
            self.selector.dynamic_k = self.adaptive.k
        for h in self.step_hooks:
            if hasattr(h, "load_state_dict") and h.name in state.get("hooks", {}):
                h.load_state_dict(state["hooks"][h.name])

    def save(self) -> Path | None:
        """Checkpoint through the engine (DeepSpeed: collective, every rank writes its part).

        The metrics of every step up to this one are on disk first (fsynced), so a resume from this
        checkpoint, which truncates metrics.jsonl to its step, loses no line. A failed write (a full disk)
        is one line; the previous checkpoint stays intact.
        """
        self.metrics.flush(durable=True)
        try:
            return self.engine.save_checkpoint(self.out / "checkpoints", self.step, self.state_dict(),
                                               self.cfg.train.max_checkpoints)
        except OSError as exc:
            raise UserError(f"cannot write the step-{self.step} checkpoint into {self.out / 'checkpoints'}: "
                            f"{exc.strerror or exc} (earlier checkpoints are intact)") from None

    def maybe_resume(self) -> bool:
        found = self.engine.load_checkpoint(self.out / "checkpoints")  # (trainer state, path) or None
        if found is None:
            self.console.log(f"warning: --resume: no checkpoint in {self.out / 'checkpoints'}; starting from step 0")
            self.metrics.reset()
            return False
        state, path = found
        self.check_resumable(state, path)
        self.load_state_dict(state)
        self.metrics.truncate_after(self.step)
        if self.metrics.sink is not None:
            self.metrics.sink.purge_step = self.step + 1  # TensorBoard drops its events after the checkpoint too
        self.console.log(f"resumed from {path} at step {self.step}")
        return True

    # --- one step ---------------------------------------------------------------------------------
    def fetch_batch(self):
        """The loader's next host candidate batch (pinned on CUDA), timed as phase ``data``."""
        with self.timer.phase("data"):
            batch = self.loader.next_batch()
            return batch.pin_memory() if self.device.type == "cuda" else batch

    def next_batch(self):
        """The host candidate batch of this step, and its stale scores when an overlap mode made them."""
        return overlap_strategy(self.overlap, self.overlap_scorer).fetch(self)

    def train_step(self) -> StepResult:
        """fetch (with the scores the previous step made, if any) → ``sift_step``: score → select → train."""
        probe = None
        if self.adaptive is not None and self.adaptive.due(self.step):  # adaptive keep: re-pick k, probe
            self.selector.dynamic_k = self.adaptive.update()
            probe = self.adaptive.noise
        mode = overlap_strategy(self.overlap, self.overlap_scorer)
        batch, scores = mode.fetch(self)
        return sift_step(
            self.engine, self.selector, batch, self.step, self.cfg.sift, self.timer, exit_layer=self.exit_layer,
            scores=scores, select_fn=self.select_fn, probe=probe,
            before_forward=lambda: mode.before_forward(self), after_backward=lambda: mode.after_backward(self),
        )

    # --- logging ----------------------------------------------------------------------------------
    def _step_record(self, step: int, res: StepResult, loss: float, step_time: float,
                     phases: dict[str, float]) -> dict:
        world = self.engine.world_size  # data parallel: every rank has the same candidate and kept counts
        n_kept, n_cand = int(res.kept.numel()) * world, res.num_candidates * world
        rec: dict[str, Any] = {
            "type": "step", "step": step, "loss": loss, "mode": res.plan.mode,
            "candidates": n_cand, "kept": n_kept, "lr": self.engine.lr(),
            "step_time_s": step_time, "samples_per_s": n_cand / max(step_time, 1e-9),
            "backprop_samples_per_s": n_kept / max(step_time, 1e-9),
            "exit_layer": self.exit_layer,
            "score_share": phases.get("score", 0.0) / max(sum(phases.values()), 1e-9),
            "kept_score_mean": None, "cand_score_mean": None, "kept_score_ratio": None,
        }
        if self.adaptive is not None:
            rec["noise_scale"] = self.adaptive.noise.value
            rec["adaptive_k"] = self.selector.dynamic_k
        if res.scores is not None:
            finite = torch.isfinite(res.scores)
            if finite.any():
                cand = res.scores[finite].mean().item()
                kept_s = res.scores[res.kept]
                kept_s = kept_s[torch.isfinite(kept_s)]
                kept_mean = kept_s.mean().item() if kept_s.numel() else float("nan")
                rec.update(kept_score_mean=kept_mean, cand_score_mean=cand,
                           kept_score_ratio=kept_mean / cand if cand else None)
        rec.update(memory_stats(self.device))
        mem = rec.get("mem_allocated_mib", rec.get("mem_rss_mib"))
        rec["mem_mib"] = mem
        return rec

    def run_eval(self) -> dict[str, Any]:
        with self.timer.phase("eval"):
            res = evaluate(self.engine.module, self.val_batches, self.device, self.engine.autocast())
        fault_point("eval")
        rec = {"type": "eval", "step": self.step, "wall_s": self.train_time, "samples": self.samples,
               "backprop_samples": self.backprop_samples, **res}
        self.last_eval = rec
        newly = self.ttt.update(res["val_mlm_acc"], rec)
        self.metrics.write(rec)
        self.metrics.flush()
        reached = f"  reached {', '.join(f'{t:g}' for t in newly)}" if newly else ""
        self.console.log(f"eval step {self.step}: val_mlm_acc {res['val_mlm_acc']:.4f}  val_loss {res['val_loss']:.4f}"
                         f"  wall {self.train_time:.1f}s{reached}")
        return rec

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        tc = self.cfg.train
        if tc.resume:
            self.maybe_resume()
        else:
            self.metrics.reset()
        if self.rank0:
            atomic_write_json(self.out / "config.json", self.cfg.to_dict())
            with atomic_path(self.out / "tokenizer.json") as tmp:  # the run's tokenizer, for sift-export
                self.data.vocab.tokenizer.save(str(tmp))
            if self.cfg.optim.lr_warmup_steps > tc.max_steps:
                self.console.log(f"warning: lr_warmup_steps ({self.cfg.optim.lr_warmup_steps}) is past max_steps "
                                 f"({tc.max_steps}): the learning rate never reaches its peak")
        profile = ProfileWindow(parse_profile_steps(tc.profile_steps or None),
                                torch_trace_dir=str(self.out / "traces") if tc.torch_profiler else None)
        nvml = NvmlSampler(self.device.index or 0) if self.device.type == "cuda" else None
        if nvml is not None:
            nvml.start()
        buffered: list[tuple[StepResult, float, Any]] = []
        if self.step == 0:
            self.run_eval()
        restore = self._install_signal_handlers()
        if self.engine.world_size > 1 and self._clock_lr():
            self._agree_stop()  # the ranks' LR progress from the start (a resumed run's clocks may differ)
        limit = self._time_limit()
        try:
            while self.step < tc.max_steps:
                if limit and (self.train_time >= limit if self.engine.world_size == 1
                              else self.budget_agreed):  # DeepSpeed: agreed at the log flush
                    self.paused = limit != tc.time_budget_s
                    self.console.log(f"paused at step {self.step} after {self.train_time:.0f}s (--stop-after-s "
                                     f"{limit:g}; the LR horizon is unchanged): --resume with a larger "
                                     "--stop-after-s (or 0) continues" if self.paused else
                                     f"time budget {tc.time_budget_s:.0f}s reached at step {self.step}")
                    break
                profile.step_begin(self.step)
                if self._clock_lr():  # DeepSpeed: the progress agreed at the last log flush
                    self.engine.lr_progress.value = (self.train_time / tc.time_budget_s if self.engine.world_size == 1
                                                     else self.lr_agreed)
                if self.cfg.sift.anneal_horizon or self.cfg.sift.select_until < 1.0:  # the LR decay's horizon
                    self.selector.progress = horizon_progress(
                        self.step / tc.max_steps, self.engine.lr_progress.value if self._clock_lr() else None,
                        self.cfg.optim.lr_horizon)
                t0 = self.clock()
                res = self.train_step()
                if self.device.type == "cuda" and (self.step + 1) % tc.log_every == 0:
                    torch.cuda.synchronize()
                dt = self.clock() - t0
                profile.step_end(self.step)
                self.train_time += dt
                self.samples += res.num_candidates * self.engine.world_size  # global counts
                self.backprop_samples += int(res.kept.numel()) * self.engine.world_size
                buffered.append((res, dt, getattr(self.engine, "last_update_ok", None)))
                self.step += 1
                fault_point("step")
                for hook in self.step_hooks:
                    hook(self, res)
                last = self.step >= tc.max_steps
                if self.step % tc.log_every == 0 or last:
                    self._flush(buffered, nvml)
                    buffered = []
                    self._agree_stop()
                if self.step % tc.eval_every == 0 or last:
                    self.run_eval()
                if tc.checkpoint_every and self.step % tc.checkpoint_every == 0:
                    if buffered:
                        self._flush(buffered, nvml)
                        buffered = []
                    self.save()
                self.console.progress(self.step, tc.max_steps, None)
                if self.stopping:
                    break
            if buffered:
                self._flush(buffered, nvml)
            if not (self.stopping or self.paused) and (not self.last_eval or self.last_eval["step"] != self.step):
                self.run_eval()
            path = self.save()
        finally:
            restore()
            profile.close()
            if nvml is not None:
                nvml.stop()
            self.metrics.close()
        summary = self.summary()
        if self.stopping:
            name = "the launcher's exit" if self.stop_signal == LAUNCHER_GONE else signal.Signals(self.stop_signal).name
            summary["stopped_by"] = name
            self.console.log(f"stopped by {name} after step {self.step}; checkpoint {path}; to continue, run the "
                             "same command with --resume")
        if self.paused:
            summary["paused_after_s"] = tc.stop_after_s
        if self.rank0:
            atomic_write_json(self.out / "summary.json", summary)
        if tc.export_hf and self.rank0 and self.stop_signal is None and not self.paused and path is not None:
            from sift_fast.export import export_checkpoint

            export_checkpoint(path, tc.export_hf, vocab=self.data.vocab)
            self.console.log(f"exported the final state to {tc.export_hf} (Hugging Face format)")
        return summary

    # --- preemption -------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        """A stop signal was received (under DeepSpeed: and all ranks agreed at a log flush)."""
        return self.stop_signal is not None and (self.engine.world_size == 1 or self.stop_agreed)

    def _time_limit(self) -> float:
        """Training time at which the run stops: the time budget, or --stop-after-s where that comes first
        (0: none)."""
        tc = self.cfg.train
        return min((x for x in (tc.time_budget_s, tc.stop_after_s) if x), default=0.0)

    def _clock_lr(self) -> bool:
        """Whether the LR decay follows the time budget (``lr_horizon`` auto / budget with a time budget)."""
        return bool(self.cfg.train.time_budget_s) and self.cfg.optim.lr_horizon != "steps"

    def _agree_stop(self) -> None:
        """Under DeepSpeed: make the stop decisions (and the clock-driven LR progress) collective at the log flush
        (every rank flushes at the same
        steps). One tiny all-reduce of [signal number (0: none), time limit reached]: a signal on any rank
        stops every rank after this step, so all of them write the same collective checkpoint; the time limit
        (the budget or --stop-after-s; each rank has its own clock) ends the run on every rank at the same step."""
        if self.engine.world_size == 1:
            return
        tc = self.cfg.train
        limit = self._time_limit()
        values = [self.stop_signal or 0, int(bool(limit) and self.train_time >= limit)]
        if self._clock_lr():  # the LR follows the clock: every rank takes the furthest rank's spent fraction
            values.append(int(self.train_time / tc.time_budget_s * 1e6))
        agreed = self.engine.any_rank(values)
        signum, budget = agreed[:2]
        if self._clock_lr():
            self.lr_agreed = agreed[2] / 1e6
        if signum:
            self.stop_signal = self.stop_signal or signum
            self.stop_agreed = True
        self.budget_agreed = bool(budget)

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM / SIGINT: finish the step (under DeepSpeed: up to the next log flush, where the ranks agree
        to stop, :meth:`_agree_stop`), checkpoint, exit 0; a second signal exits at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.stop_signal is not None:  # second signal: every write is atomic, so leaving now is safe
                os.write(2, f"{name} again: exiting now; the last complete checkpoint stays valid\n".encode())
                os._exit(128 + signum)
            self.stop_signal = signum
            until = f"step {self.step + 1}" if self.engine.world_size == 1 else "up to the next log flush"
            os.write(2, f"{name}: finishing {until}, then writing a checkpoint (send it again to exit at once)\n"
                     .encode())

        def launcher_gone(signum: int, frame: Any) -> None:  # may arrive more than once: idempotent
            if self.stop_signal is None:
                self.stop_signal = signum
                os.write(2, b"the launcher exited: stopping at the next log flush, then writing a checkpoint\n")

        saved = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        if self.engine.world_size > 1:
            saved[LAUNCHER_GONE] = signal.signal(LAUNCHER_GONE, launcher_gone)

        def restore() -> None:
            for s, h in saved.items():
                signal.signal(s, h)

        return restore

    def _flush(self, buffered: list[tuple[StepResult, float, Any]], nvml) -> None:
        # one host transfer for the window: losses and the update guards (no extra per-step sync)
        oks = [torch.as_tensor(True if ok is None else ok, device=r.loss.device).float() for r, _, ok in buffered]
        losses, oks = torch.stack([torch.stack([r.loss.float() for r, _, _ in buffered]), torch.stack(oks)]).cpu()
        losses, oks = losses.tolist(), [bool(x) for x in oks.tolist()]
        phases = self.timer.results()
        first = self.step - len(buffered)
        wall = self.train_time - sum(dt for _, dt, _ in buffered)
        score = {"score_time_s": phases.get("score", 0.0) / len(buffered),  # mean per step of this window
                 "score_hidden_share": self.overlap_scorer.hidden_share() if self.overlap_scorer else 0.0}
        bad_steps = []
        for i, ((res, dt, _), loss, ok) in enumerate(zip(buffered, losses, oks)):
            wall += dt
            rec = self._step_record(first + i + 1, res, loss, dt, phases)
            rec["wall_s"] = wall
            rec.update(score)
            if not ok or not math.isfinite(loss):
                rec["nonfinite"] = True
                rec["update_applied"] = False if getattr(self.engine, "guards_updates", False) else None
                bad_steps.append(first + i + 1)
                self.bad_run += 1
                self.bad_total += 1
            else:
                self.bad_run = 0
            self.metrics.write(rec)
            if i == len(buffered) // 2:
                fault_point("metrics-flush")
        due = self.step // self.cfg.train.nvml_every > (self.step - len(buffered)) // self.cfg.train.nvml_every
        if nvml is not None and due and (s := nvml.summary()):
            self.metrics.write({"type": "nvml", "step": self.step, **s})
        self.metrics.flush()
        self.console.log(format_step_line(rec, self.cfg.train.max_steps))
        if bad_steps:
            self._nonfinite(bad_steps)

    def _nonfinite(self, bad_steps: list[int]) -> None:
        """Apply ``--nan-policy`` to the non-finite steps of a flushed window."""
        tc = self.cfg.train
        where = f"non-finite loss or gradient norm at step(s) {', '.join(map(str, bad_steps))}"
        if tc.nan_policy == "skip" and self.bad_run < tc.max_bad_steps:
            self.console.log(f"warning: {where}: update skipped ({self.bad_total} skipped so far)")
            return
        why = (f"{self.bad_run} consecutive (--max-bad-steps {tc.max_bad_steps})" if tc.nan_policy == "skip"
               else "--nan-policy halt")
        if getattr(self.engine, "guards_updates", False):  # the weights never took a non-finite update
            path = self.save()
            raise TrainingHalted(f"{where} ({why}); last good state checkpointed at {path}; inspect the data or "
                                 "lower --lr, then continue with --resume")
        raise TrainingHalted(f"{where} ({why}); no checkpoint written (this engine cannot hold the update "
                             "back); the last periodic checkpoint is the last good state")

    def summary(self) -> dict[str, Any]:
        return {
            "preset": self.cfg.preset, "selection": self.cfg.sift.selection, "keep": self.cfg.sift.keep,
            "exit_layer": self.exit_layer, "candidates": self.cfg.sift.candidates,
            "steps": self.step, "train_time_s": self.train_time, "samples": self.samples,
            "backprop_samples": self.backprop_samples, "final_eval": self.last_eval,
            "time_to_target": self.ttt.reached, "device": str(self.device), "overlap": self.overlap,
        }


def train(cfg: Config, **kwargs: Any) -> dict[str, Any]:
    """Run ``sift-pretrain`` with ``cfg``; returns the summary."""
    return Trainer(cfg, **kwargs).run()
