"""Reliability: kill -9 anywhere and resume loses nothing; checkpoints never run code; torn checkpoints are
skipped; SIGTERM checkpoints and exits 0; non-finite steps are never applied; bad inputs are one line, exit 2.

The reference for every resume is an uninterrupted run of the same command (CPU, one thread, deterministic):
the killed-and-resumed run must write the same metrics lines (timing fields aside) and end with bitwise the
same weights, optimizer, selector and data-loader state.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sift_fast.cli.args import run_cli
from sift_fast.cli.pretrain import _main as pretrain_main
from sift_fast.errors import ConfigError, TrainingHalted
from sift_fast.train.checkpoint import list_checkpoints, load_checkpoint
from sift_fast.train.loop import Trainer

TIMING = re.compile(r"(_s$|share|^mem)")  # wall-clock fields: the only ones allowed to differ
MAX_STEPS = 40  # room for every interruption below (each moves the last checkpoint <= 6 steps)


def trainer_argv(corpus, out):
    return ["--preset", "micro", "--data", corpus["data"], "--cache-dir", corpus["cache_dir"], "--out", str(out),
            "--max-steps", str(MAX_STEPS), "--checkpoint-every", "3", "--eval-every", "4", "--log-every", "5",
            "--max-checkpoints", "2", "--selection", "entropy", "--overlap", "sequential-stale", "--dropout", "0.1",
            "--device", "cpu", "--num-threads", "1", "--seed", "3"]


def launch(corpus, out, fault=None, resume=False, timeout=180):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SIFT_FAULT_POINT", None)
    if fault:
        env["SIFT_FAULT_POINT"] = fault
    argv = [sys.executable, "-m", "sift_fast.pretrain", *trainer_argv(corpus, out)] + (["--resume"] if resume else [])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def records(out):
    """metrics.jsonl without the wall-clock fields, one dict per line, in file order."""
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if not TIMING.search(k)} for ln in lines]


def final_state(out):
    state = load_checkpoint(list_checkpoints(Path(out) / "checkpoints")[-1][1])
    return {k: state[k] for k in ("step", "samples", "backprop_samples", "engine", "loader", "selector", "rng")}


def assert_same_tree(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape"):  # numpy
        assert (a == b).all(), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def reference(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = launch(small_corpus, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"records": records(out), "state": final_state(out)}


def assert_matches_reference(out, reference):
    got = records(out)
    steps = [r["step"] for r in got if r["type"] == "step"]
    assert steps == list(range(1, MAX_STEPS + 1))  # every step exactly once, in order
    assert len(got) == len(reference["records"])
    for i, (a, b) in enumerate(zip(reference["records"], got)):
        assert a == b, f"line {i + 1}: {a} != {b}"
    assert_same_tree(reference["state"], final_state(out))


# (point, highest hit count): a kill lands after the n-th pass of the point (see sift_fast/faults.py)
POINTS = [("step", 4), ("eval", 2), ("checkpoint-write", 2), ("checkpoint-manifest", 2), ("metrics-flush", 2)]


def latest_step(out):
    found = list_checkpoints(Path(out) / "checkpoints")
    return found[-1][0] if found else 0


def test_interruptions_anywhere_then_resume_matches_uninterrupted(small_corpus, reference, tmp_path):
    """One run through every interruption (one test, to launch few processes): SIGTERM (checkpoint, exit 0),
    SIGINT twice (the second inside the checkpoint write: exit at once), SIGKILL at six seeded points (each
    kind once, one inside the checkpoint write), SIGKILL at a seeded random time; then resume to the end."""
    out, rng = tmp_path / "run", random.Random(0)
    proc = launch(small_corpus, out, fault="step:5:TERM")
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "stopped by SIGTERM after step 5" in last and "--resume" in last, last
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [3, 5]

    proc = launch(small_corpus, out, resume=True, fault="step:1:INT,checkpoint-write:1:INT")
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr[-2000:]
    assert "SIGINT again: exiting now" in proc.stderr and "Traceback" not in proc.stderr
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [3, 5]  # step 6 never half-written

    plan = POINTS + [rng.choice(POINTS)]
    rng.shuffle(plan)
    tried = []
    for point, hi in plan:
        fault = f"{point}:{rng.randint(1, hi) if MAX_STEPS - latest_step(out) > 10 else 1}"
        proc = launch(small_corpus, out, fault=fault, resume=True)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        tried.append(f"{fault} (newest checkpoint after it: step {latest_step(out)})")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SIFT_FAULT_POINT", None)
    argv = [sys.executable, "-m", "sift_fast.pretrain", *trainer_argv(small_corpus, out), "--resume"]
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    delay = rng.uniform(4.0, 12.0)  # lands in start-up, training, an eval or a write: wherever the run is
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    tried.append(f"random time {delay:.1f}s (rc {p.returncode})")

    proc = launch(small_corpus, out, resume=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stderr
    assert_matches_reference(out, reference)
    assert not list((out / "checkpoints").glob(".*tmp*")), "a killed write's temp file survived the resume"
    print("interruptions:", tried)


# --- checkpoint files: torn, corrupt, malicious ----------------------------------------------------


def run_cli_capture(argv, capsys):
    """``sift-pretrain ARGV`` in this process: its exit code and its stderr lines."""
    try:
        code = run_cli("sift-pretrain", pretrain_main, argv)
    except SystemExit as exc:  # argparse errors exit from inside the parser
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def _two_checkpoints(small_corpus, tmp_path_factory):
    from sift_fast.config import build_config

    out = tmp_path_factory.mktemp("ck") / "run"
    cfg = build_config({"preset": "micro", "out": str(out), "max_steps": 4, "checkpoint_every": 2,
                        "max_checkpoints": 3, **small_corpus})
    Trainer(cfg).run()
    return cfg, out


@pytest.fixture
def two_checkpoints(_two_checkpoints, tmp_path):
    """A copy of an in-process run with checkpoints at steps 2 and 4."""
    import shutil

    cfg, src = _two_checkpoints
    out = tmp_path / "ck"
    shutil.copytree(src, out)
    return cfg.replace(out=str(out)), out


@pytest.mark.parametrize("damage", ["truncate", "flip", "truncate-no-manifest", "empty"])
def test_torn_newest_checkpoint_is_skipped_with_one_warning(damage, two_checkpoints, capsys):
    cfg, out = two_checkpoints
    newest = out / "checkpoints" / "step_00000004.pt"
    raw = newest.read_bytes()
    if damage.startswith("truncate"):
        newest.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        mid = len(raw) // 2
        newest.write_bytes(raw[:mid] + bytes(b ^ 0xFF for b in raw[mid:mid + 8]) + raw[mid + 8:])
    else:
        newest.write_bytes(b"")
    if damage.endswith("no-manifest"):
        newest.with_suffix(".json").unlink()  # the loader's own error must catch it
    tr = Trainer(cfg.replace(resume=True, max_steps=4))
    capsys.readouterr()
    assert tr.maybe_resume() and tr.step == 2
    err = capsys.readouterr().err.strip().splitlines()
    warn = [ln for ln in err if "warning" in ln]
    assert len(warn) == 1 and "step_00000004.pt" in warn[0] and "torn or corrupt" in warn[0], err


def test_every_checkpoint_corrupt_is_one_line_exit_2(two_checkpoints, small_corpus, capsys):
    cfg, out = two_checkpoints
    for _, p in list_checkpoints(out / "checkpoints"):
        p.write_bytes(p.read_bytes()[:100])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    argv = ["--preset", "micro", "--data", small_corpus["data"], "--cache-dir", small_corpus["cache_dir"],
            "--out", str(out), "--max-steps", "4", "--resume"]
    code, err = run_cli_capture(argv, capsys)
    assert code == 2
    assert err[-1].startswith("sift-pretrain: error: no complete checkpoint") and len(err) == 3, err  # 2 warnings
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


class Payload:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("form", ["torch-zip", "plain-pickle", "inside-state"])
def test_checkpoint_with_pickled_code_is_refused_and_never_runs(form, small_corpus, tmp_path, capsys):
    import pickle

    out, marker = tmp_path / "out", tmp_path / "PWNED"
    ck = out / "checkpoints" / "step_00000003.pt"
    ck.parent.mkdir(parents=True)
    if form == "torch-zip":
        torch.save(Payload(marker), ck)
    elif form == "plain-pickle":
        ck.write_bytes(pickle.dumps(Payload(marker)))
    else:  # a plausible trainer state with the payload in one field
        torch.save({"step": 3, "engine": {"model": {"w": torch.zeros(2)}}, "config": Payload(marker)}, ck)
    argv = ["--preset", "micro", "--data", small_corpus["data"], "--cache-dir", small_corpus["cache_dir"],
            "--out", str(out), "--max-steps", "4", "--resume"]
    code, err = run_cli_capture(argv, capsys)
    assert code == 2 and len(err) == 1, err
    assert "refusing to load it" in err[0] and str(ck) in err[0], err
    assert form == "plain-pickle" or "posix.system" in err[0], err  # a protocol-4 pickle stops at its 1st op
    assert not marker.exists(), "the pickled payload ran"
    assert sorted(p.name for p in out.rglob("*")) == ["checkpoints", "step_00000003.pt"]


def test_full_disk_while_checkpointing_keeps_the_previous_one(micro_cfg, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    tr = Trainer(micro_cfg(out=str(out), max_steps=4, checkpoint_every=2))
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if tr.step == 4:
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    from sift_fast.errors import UserError

    with pytest.raises(UserError, match="cannot write the step-4 checkpoint .*No space left on device"):
        tr.run()
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [2]
    assert load_checkpoint(out / "checkpoints" / "step_00000002.pt")["step"] == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002.json", "step_00000002.pt"]


# --- non-finite steps ----------------------------------------------------------------------------


def poison(tr, steps):
    """Make the loss of the given (1-based) steps NaN, as a diverging run or a bad batch would."""
    real = tr.engine.backward

    def backward(loss):
        real(loss * float("nan") if tr.step + 1 in steps else loss)

    tr.engine.backward = backward


def test_nonfinite_step_is_never_applied(micro_cfg):
    tr = Trainer(micro_cfg(selection="entropy", nan_policy="skip"))
    poison(tr, {3})
    for _ in range(2):
        tr.train_step()
        tr.step += 1
    before = {k: v.clone() for k, v in tr.engine.module.state_dict().items()}
    opt_before = {i: s["step"].clone() for i, s in tr.engine.optimizer.state.items()}
    tr.train_step()
    tr.step += 1
    assert not bool(tr.engine.last_update_ok)
    after = tr.engine.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights untouched
    assert all(torch.equal(opt_before[i], s["step"]) for i, s in tr.engine.optimizer.state.items())
    tr.train_step()  # the next, finite step trains again
    assert bool(tr.engine.last_update_ok)
    assert not all(torch.equal(before[k], v) for k, v in tr.engine.module.state_dict().items())


def test_nan_policy_skip_logs_and_continues_halt_checkpoints_and_stops(micro_cfg, tmp_path):
    skip = Trainer(micro_cfg(out=str(tmp_path / "skip"), nan_policy="skip", log_every=3, max_steps=6))
    poison(skip, {2, 5})
    summary = skip.run()
    assert summary["steps"] == 6 and skip.bad_total == 2
    recs = [json.loads(ln) for ln in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    bad = [r["step"] for r in recs if r.get("nonfinite")]
    assert bad == [2, 5] and all(r["update_applied"] is False for r in recs if r.get("nonfinite"))
    assert all(torch.isfinite(p).all() for p in skip.engine.module.parameters())

    halt = Trainer(micro_cfg(out=str(tmp_path / "halt"), nan_policy="halt", log_every=2, max_steps=6))
    poison(halt, {3})
    with pytest.raises(TrainingHalted, match=r"step\(s\) 3 \(--nan-policy halt\); last good state checkpointed"):
        halt.run()
    state = load_checkpoint(list_checkpoints(tmp_path / "halt" / "checkpoints")[-1][1])
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["engine"]["model"].values())

    many = Trainer(micro_cfg(out=str(tmp_path / "many"), nan_policy="skip", max_bad_steps=2, log_every=1))
    poison(many, {3, 4, 5, 6})
    with pytest.raises(TrainingHalted, match=r"2 consecutive \(--max-bad-steps 2\)"):
        many.run()
    assert many.step == 4


# --- bad inputs: one line naming the flag or file, exit 2, nothing written into --out -----------------


@pytest.fixture(scope="module")
def bad(tmp_path_factory, small_corpus):
    d = tmp_path_factory.mktemp("bad")
    files = {"corpus": small_corpus["data"], "cache": small_corpus["cache_dir"]}

    def put(name, data):
        p = d / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        files[name.replace(".", "_")] = str(p)

    put("empty.txt", "\n \n")
    put("binary.txt", b"\x00\x01\x02\x03binary")
    put("latin1.txt", "caf\xe9 au lait ".encode("latin-1") * 50)
    put("nokey.jsonl", "".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(20)))
    put("badline.jsonl", '{"text": "fine"}\n{not json\n')
    put("nomask.txt", "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c"]) + "\n")
    put("binvocab.txt", b"\x00\xff\xfe")
    put("unknown.json", json.dumps({"sift": {"kepp": 0.5}}))
    put("wrongtype.json", json.dumps({"keep": "lots"}))
    put("list.yaml", "- 1\n- 2\n")
    put("broken.yaml", "sift: [unclosed\n")
    put("evil.yaml", f"keep: !!python/object/apply:os.system ['touch {d}/YAML_PWNED']\n")
    put("cfg.txt", "keep: 0.5\n")
    put("badsection.json", json.dumps({"sift": 3}))
    put("afile", "not a directory")
    put("tok.json", "{not a tokenizer")
    put("small_vocab.txt", "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e"]) + "\n")
    put("warmup.json", json.dumps({"optim": {"lr_warmup_steps": 50}}))
    import numpy as np

    from sift_fast.data.indexed import write_indexed

    write_indexed(d / "meg", [np.arange(5, 60, dtype=np.int32) for _ in range(8)], dtype=np.int32)
    (d / "badmagic.idx").write_bytes(b"NOTMEGATRON" + (d / "meg.idx").read_bytes()[11:])
    (d / "badmagic.bin").write_bytes((d / "meg.bin").read_bytes())
    (d / "trunc.idx").write_bytes((d / "meg.idx").read_bytes()[:-7])
    (d / "trunc.bin").write_bytes((d / "meg.bin").read_bytes())
    (d / "shortbin.idx").write_bytes((d / "meg.idx").read_bytes())
    (d / "shortbin.bin").write_bytes((d / "meg.bin").read_bytes()[:-4])
    files["dir"] = str(d)
    return files


# name: (argv, text the one line must contain); {x} is a path from the `bad` fixture
BAD_INPUTS = {
    "keep 0": (["--keep", "0"], "keep must be in (0, 1]"),
    "keep 1.5": (["--keep", "1.5"], "keep must be in (0, 1]"),
    "keep not a number": (["--keep", "half"], "--keep: invalid float value"),
    "exit layer 0": (["--exit-layer", "0"], "exit_layer must be >= 1"),
    "exit layer past L": (["--exit-layer", "3"], "exit_layer must be in [1, 2]"),
    "exit layer word": (["--exit-layer", "deep"], "--exit-layer"),
    "candidates 0": (["--candidates", "0"], "candidates must be >= 1"),
    "max steps 0": (["--max-steps", "0"], "max_steps must be > 0"),
    "max steps word": (["--max-steps", "ten"], "--max-steps: invalid int value"),
    "eval every 0": (["--eval-every", "0"], "eval_every must be > 0"),
    "log every 0": (["--log-every", "0"], "log_every must be > 0"),
    "eval batch 0": (["--eval-batch-size", "0"], "eval_batch_size must be > 0"),
    "max checkpoints 0": (["--max-checkpoints", "0"], "max_checkpoints must be > 0"),
    "checkpoint every -1": (["--checkpoint-every", "-1"], "checkpoint_every must be >= 0"),
    "lr 0": (["--lr", "0"], "lr must be > 0"),
    "grad clip -1": (["--grad-clip", "-1"], "grad_clip must be >= 0"),
    "min lr ratio 2": (["--min-lr-ratio", "2"], "min_lr_ratio must be in [0, 1]"),
    "dropout 1": (["--dropout", "1"], "dropout must be in [0, 1)"),
    "mask prob 0": (["--mask-prob", "0"], "mask_prob must be in (0, 1)"),
    "valid fraction 1": (["--valid-fraction", "1"], "valid_fraction must be in (0, 1)"),
    "seq len 4": (["--seq-len", "4"], "seq_len must be >= 8"),
    "seq len past memory": (["--seq-len", "100000"], "--seq-len 100000: one attention matrix"),
    "vocab size 0": (["--vocab-size", "0"], "vocab_size must be > 0"),
    "layers 0": (["--num-layers", "0"], "num_layers must be > 0"),
    "heads do not divide width": (["--num-heads", "3"], "not divisible by num_heads"),
    "unknown selection": (["--selection", "smart"], "--selection: invalid choice"),
    "unknown overlap": (["--overlap", "sideways"], "--overlap: invalid choice"),
    "unknown precision": (["--precision", "fp8"], "--precision: invalid choice"),
    "unknown nan policy": (["--nan-policy", "ignore"], "--nan-policy: invalid choice"),
    "max bad steps 0": (["--max-bad-steps", "0"], "max_bad_steps must be > 0"),
    "device tpu": (["--device", "tpu"], "device must be auto, cpu, cuda"),
    "targets out of range": (["--targets", "0.5,2"], "targets must be accuracies in (0, 1]"),
    "targets not numbers": (["--targets", "a,b"], "--targets"),
    "time budget -1": (["--time-budget-s", "-1"], "time_budget_s must be >= 0"),
    "stop after -1": (["--stop-after-s", "-1"], "stop_after_s must be >= 0"),
    "prefetch -2": (["--prefetch", "-2"], "prefetch must be -1"),
    "score tokens -1": (["--score-tokens", "-1"], "score_tokens must be >= 0"),
    "selection warmup past max steps": (["--selection-warmup-steps", "50"], "the run would never select"),
    "anneal before warmup": (["--selection-warmup-steps", "5", "--anneal-until", "3"], "anneal_until (3)"),
    "noise decay 1": (["--noise-decay", "1"], "noise_decay must be in [0, 1)"),
    "sample mix 2": (["--sample-mix", "2"], "sample_mix must be in [0, 1]"),
    "two keep schedules": (["--adaptive-keep", "noise", "--anneal-until", "10"], "two keep schedules"),
    "anneal horizon past the run": (["--anneal-horizon", "2"], "anneal_horizon must be a fraction of the run"),
    "anneal horizon beside anneal until": (["--anneal-horizon", "0.5", "--anneal-until", "4"], "third keep schedule"),
    "select until zero": (["--select-until", "0"], "select_until must be a fraction of the run"),
    "select until past the run": (["--select-until", "1.2"], "select_until must be a fraction of the run"),
    "unknown preset": (["--preset", "huge"], "unknown preset 'huge'"),
    "unknown flag": (["--kepp", "0.5"], "unrecognized arguments: --kepp"),
    "config missing": (["--config", "{dir}/nope.yaml"], "config file not found"),
    "config wrong suffix": (["--config", "{cfg_txt}"], "must end in .yaml, .yml or .json"),
    "config unknown key": (["--config", "{unknown_json}"], "unknown config key sift.kepp"),
    "config wrong type": (["--config", "{wrongtype_json}"], "keep"),
    "config not a mapping": (["--config", "{list_yaml}"], "must hold a mapping"),
    "config bad yaml": (["--config", "{broken_yaml}"], "cannot parse config file"),
    "config python tag": (["--config", "{evil_yaml}"], "cannot parse config file"),
    "config section not a mapping": (["--config", "{badsection_json}"], "config section 'sift' must be a mapping"),
    "out not creatable": (["--out", "/proc/forbidden/run"], "--out /proc/forbidden/run is not writable"),
    "out is a file": (["--out", "{afile}/run"], "a parent is a file"),
    "corpus missing": (["--data", "{dir}/none.txt"], "corpus file not found"),
    "corpus empty": (["--data", "{empty_txt}"], "is empty"),
    "corpus binary": (["--data", "{binary_txt}"], "is a binary file"),
    "corpus not utf-8": (["--data", "{latin1_txt}"], "is not UTF-8 text"),
    "jsonl without text key": (["--data", "{nokey_jsonl}"], "text"),
    "jsonl bad line": (["--data", "{badline_jsonl}"], "badline.jsonl"),
    "corpus is a directory": (["--data", "{dir}"], "got a directory"),
    "vocab without mask": (["--vocab", "{nomask_txt}"], "missing [MASK]"),
    "vocab binary": (["--vocab", "{binvocab_txt}"], "binvocab.txt"),
    "vocab missing": (["--vocab", "{dir}/none-vocab.txt"], "not found"),
    "tokenizer json broken": (["--vocab", "{tok_json}"], "not a valid tokenizer.json"),
    "megatron without vocab": (["--data", "megatron:{dir}/meg"], "pass --vocab"),
    "megatron bad magic": (["--data", "megatron:{dir}/badmagic", "--vocab", "bundled"], "bad header"),
    "megatron idx truncated": (["--data", "megatron:{dir}/trunc", "--vocab", "bundled"], "trunc.idx"),
    "megatron bin truncated": (["--data", "megatron:{dir}/shortbin", "--vocab", "bundled"], "truncated"),
    "world size without deepspeed": (["--max-steps", "2"], "without --deepspeed"),  # WORLD_SIZE=2 below
    "tokenizer does not match megatron ids": (["--data", "megatron:{dir}/meg", "--vocab", "{small_vocab_txt}"],
                                              ("meg.bin: token id 59 is outside the vocabulary of --vocab",
                                               "small_vocab.txt (10 ids)", "meg.idx")),
    "lr warmup past max steps": (["--lr-warmup-steps", "50"], "--lr-warmup-steps 50 is past --max-steps 10"),
    "lr warmup past max steps, time budget": (["--lr-warmup-steps", "50", "--time-budget-s", "60"],
                                              "--lr-warmup-steps 50 is past --max-steps 10"),
    "lr warmup past max steps, config file": (["--config", "{warmup_json}"], "--lr-warmup-steps 50 is past"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_nothing_written(name, bad, tmp_path, capsys, monkeypatch):
    argv, needle = BAD_INPUTS[name]
    out = tmp_path / "out"
    if name == "world size without deepspeed":
        monkeypatch.setenv("WORLD_SIZE", "2")
    base = ["--preset", "micro", "--data", bad["corpus"], "--cache-dir", bad["cache"], "--out", str(out),
            "--max-steps", "10"]
    code, err = run_cli_capture(base + [a.format(**bad) for a in argv], capsys)
    assert code == 2, err
    needles = (needle,) if isinstance(needle, str) else needle
    assert len(err) == 1 and err[0].startswith("sift-pretrain: error:") and all(n in err[0] for n in needles), err
    assert not out.exists(), list(out.rglob("*"))
    assert not (Path(bad["dir"]) / "YAML_PWNED").exists()


def test_resume_refuses_another_model_tokenizer_or_selection(two_checkpoints, small_corpus, capsys):
    cfg, out = two_checkpoints
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    base = ["--preset", "micro", "--data", small_corpus["data"], "--cache-dir", small_corpus["cache_dir"],
            "--out", str(out), "--max-steps", "6", "--resume"]
    for extra, needle in ((["--hidden-size", "64"], "hidden_size=32 (this run: 64)"),
                          (["--vocab-size", "600"], "vocab_size=512 (this run: 600)"),
                          (["--selection", "loss"], "selection='entropy' (this run: 'loss')")):
        code, err = run_cli_capture(base + extra, capsys)
        assert code == 2 and len(err) == 1 and needle in err[0] and "--resume" in err[0], err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resume_check_ignores_selection_settings_a_baseline_never_uses(micro_cfg, tmp_path):
    from types import SimpleNamespace

    def check(saved_sift, saved_optim=None, **sift):
        cfg = micro_cfg(**sift)
        optim = {**cfg.to_dict()["optim"], **(saved_optim or {})}
        state = {"config": {**cfg.to_dict(), "sift": {**cfg.to_dict()["sift"], **saved_sift},
                            "optim": {k: v for k, v in optim.items() if v is not None}}}
        me = SimpleNamespace(cfg=cfg, **{k: getattr(Trainer, k) for k in (
            "RESUME_MUST_MATCH", "RESUME_BASELINE", "RESUME_OLD_DEFAULTS")})
        Trainer.check_resumable(me, state, tmp_path / "c.pt")

    check({"select_until": 0.3, "keep": 0.25}, selection="none")  # a baseline: neither is used
    for saved, sift, needle in (({"select_until": 0.3}, {"selection": "entropy"}, "select_until=0.3 (this run: 0.1)"),
                                ({"candidates": 16}, {"selection": "none"}, "candidates=16"),
                                ({"selection": "entropy"}, {"selection": "none"}, "selection='entropy'")):
        with pytest.raises(ConfigError, match=re.escape(needle)):
            check(saved, **sift)
    # the optimizer's param groups: a checkpoint from before lr_batch_scale_params existed holds two groups ("all")
    check({}, {"lr_batch_scale_params": None}, selection="entropy")  # old checkpoint, this run "all": fine
    with pytest.raises(ConfigError, match=re.escape("lr_batch_scale_params='all' (this run: 'embeddings')")):
        check({}, {"lr_batch_scale_params": None}, selection="entropy", lr_batch_scale_params="embeddings")
    with pytest.raises(ConfigError, match=re.escape("lr_batch_scale_params='embeddings' (this run: 'all')")):
        check({}, {"lr_batch_scale_params": "embeddings"}, selection="none")
    # a selection step's LR rule: a checkpoint of the previous default (sqrt) does not silently resume under
    # fourth-root, nor one from before the key existed (no scale) under any scale; a baseline never uses it
    with pytest.raises(ConfigError, match=re.escape("lr_batch_scale='sqrt' (this run: 'fourth-root')")):
        check({}, {"lr_batch_scale": "sqrt"}, selection="entropy", lr_batch_scale="fourth-root")
    with pytest.raises(ConfigError, match=re.escape("lr_batch_scale='none' (this run: 'sqrt')")):
        check({}, {"lr_batch_scale": None}, selection="entropy", lr_batch_scale="sqrt")
    check({}, {"lr_batch_scale": "sqrt"}, selection="entropy", lr_batch_scale="sqrt")
    # a power compares as a power: sqrt is 0.5 whatever its spelling; another power is another rule
    check({}, {"lr_batch_scale": "sqrt"}, selection="entropy", lr_batch_scale="0.5")
    check({}, {"lr_batch_scale": 0.3125}, selection="entropy", lr_batch_scale="0.3125")
    with pytest.raises(ConfigError, match=re.escape("lr_batch_scale=0.3125 (this run: 'fourth-root')")):
        check({}, {"lr_batch_scale": 0.3125}, selection="entropy", lr_batch_scale="0.25")
    check({}, {"lr_batch_scale": "sqrt"}, selection="none", lr_batch_scale="fourth-root")


def test_resume_without_checkpoint_says_so(micro_cfg, tmp_path, capsys):
    out = tmp_path / "fresh"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"type": "step", "step": 1, "loss": 9.0}\n')  # a stale earlier run
    tr = Trainer(micro_cfg(out=str(out), resume=True, max_steps=2))
    tr.run()
    err = capsys.readouterr().err
    assert "warning: --resume: no checkpoint in" in err and "starting from step 0" in err
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(ln)["type"] == "step"]
    assert steps == [1, 2]


def test_warmup_past_max_steps_warns(micro_cfg, capsys):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        micro_cfg(anneal_until=50, max_steps=6)
    assert any("anneal_until (50) is past max_steps (6)" in str(w.message) for w in caught)
    Trainer(micro_cfg(lr_warmup_steps=50, max_steps=1)).run()
    assert "lr_warmup_steps (50) is past max_steps (1)" in capsys.readouterr().err


def test_deepspeed_checkpoint_reads_are_guarded(tmp_path):
    """DeepSpeed's own loader (``torch.load(weights_only=False)``) is replaced on our engine: its plain types
    load, a shard with pickled code is refused and does not run."""
    pytest.importorskip("deepspeed")
    from types import SimpleNamespace

    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    from sift_fast.distributed.engine import guard_deepspeed_loads
    from sift_fast.train.checkpoint import CheckpointError

    ds = SimpleNamespace(checkpoint_engine=SimpleNamespace(load=None))
    guard_deepspeed_loads(ds)
    good, evil, marker = tmp_path / "optim.pt", tmp_path / "evil.pt", tmp_path / "PWNED"
    torch.save({"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.optimizer_states,
                "state": {"exp_avg": torch.ones(3)}}, good)
    loaded = ds.checkpoint_engine.load(str(good), map_location=torch.device("cpu"))
    assert loaded["zero_stage"] is ZeroStageEnum.optimizer_states and torch.equal(loaded["state"]["exp_avg"],
                                                                                  torch.ones(3))
    torch.save({"optimizer_state_dict": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="posix.system"):
        ds.checkpoint_engine.load(str(evil), map_location=None)
    assert not marker.exists()


# --- DeepSpeed: 2 gloo ranks under torchrun, ZeRO 1 and 3 ---------------------------------------------

DS_STEPS = 16


def ds_argv(corpus, out, stage):
    return ["-m", "sift_fast.pretrain", "--deepspeed", "--deepspeed_config",
            str(Path(__file__).resolve().parents[1] / "configs" / f"ds_zero{stage}.json"), "--preset", "micro",
            "--data", corpus["data"], "--cache-dir", corpus["cache_dir"], "--out", str(out), "--max-steps",
            str(DS_STEPS), "--checkpoint-every", "2", "--log-every", "2", "--eval-every", "4", "--max-checkpoints",
            "2", "--selection", "entropy", "--num-threads", "1", "--dist-timeout", "10"]


def ds_launch(corpus, out, stage, fault=None, resume=False, wait=True):
    """``torchrun --nproc_per_node 2 sift_fast.pretrain --deepspeed …`` (a Popen when ``wait`` is False)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "SIFT_FAULT_LOG": str(Path(out).parent / "faults.log")}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SIFT_FAULT_POINT"):
        env.pop(key, None)
    if fault:
        env["SIFT_FAULT_POINT"] = fault
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           *ds_argv(corpus, out, stage), *(["--resume"] if resume else [])]
    if not wait:
        log = open(Path(out).parent / "launcher.log", "w")
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def ds_tags(out):
    return sorted(p.name for p in (Path(out) / "checkpoints").glob("step_*"))


def ds_tensors(out):
    """Every tensor of the newest DeepSpeed tag (model states, ZeRO shards), by file and key path."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from sift_fast.train.checkpoint import safe_load

    tag = Path(out) / "checkpoints" / ds_tags(out)[-1]
    found = {}

    def walk(x, where):
        if isinstance(x, torch.Tensor):
            found[where] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")

    for f in sorted(tag.glob("*_states.pt")):
        walk(safe_load(f, extra=(LossScaler, ZeroStageEnum, fragment_address)), f.name)
    return tag.name, found


@pytest.fixture(scope="module")
def ds_reference(small_corpus, tmp_path_factory):
    """Uninterrupted 2-rank runs, ZeRO 1 and ZeRO 3 (launched together: the launches are mostly start-up)."""
    pytest.importorskip("deepspeed")
    outs = {stage: tmp_path_factory.mktemp(f"ds_ref{stage}") / "run" for stage in (1, 3)}
    procs = {stage: ds_launch(small_corpus, out, stage, wait=False) for stage, out in outs.items()}
    for stage, p in procs.items():
        assert p.wait(timeout=300) == 0, (outs[stage].parent / "launcher.log").read_text()[-3000:]
    return {stage: {"records": records(out), "tensors": ds_tensors(out)} for stage, out in outs.items()}


def assert_ds_matches(out, ref):
    got = records(out)
    assert [r["step"] for r in got if r["type"] == "step"] == list(range(1, DS_STEPS + 1))
    assert len(got) == len(ref["records"])
    for i, (a, b) in enumerate(zip(ref["records"], got)):
        assert a == b, f"line {i + 1}: {a} != {b}"
    tag, tensors = ds_tensors(out)
    assert tag == ref["tensors"][0] and tensors.keys() == ref["tensors"][1].keys()
    for k, v in ref["tensors"][1].items():
        assert v.dtype == tensors[k].dtype and torch.equal(v, tensors[k]), k


def fault_time(out):
    return float((Path(out).parent / "faults.log").read_text().split()[-1])


def test_deepspeed_zero1_kill_rank_sigterm_kill_launcher_torn_tag_then_resume_matches(
        small_corpus, ds_reference, tmp_path):
    """ZeRO 1, 2 ranks: SIGKILL rank 1 (the job fails fast), SIGTERM one rank (both stop at the same step,
    exit 0), SIGKILL the launcher (the ranks stop together, no orphan), a newest tag damaged on rank 1 only
    (skipped on both ranks); the final resume equals the uninterrupted run line for line and bitwise."""
    out = tmp_path / "run"
    proc = ds_launch(small_corpus, out, 1, fault="step:5@1")
    ended = __import__("time").time()
    assert proc.returncode != 0 and ended - fault_time(out) < 30, (proc.returncode, ended - fault_time(out))
    assert "rank 0: error:" in proc.stderr and "another rank probably died" in proc.stderr, proc.stderr[-3000:]
    assert ds_tags(out) == ["step_00000002", "step_00000004"]

    proc = ds_launch(small_corpus, out, 1, fault="step:3:TERM@1", resume=True)  # rank 1 only, after step 7
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopped by SIGTERM after step 8;" in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
    assert sorted(p.name for p in (out / "checkpoints" / "step_00000008").glob("manifest_rank*")) == \
        ["manifest_rank00000.json", "manifest_rank00001.json"]

    import time

    def ranks_alive():
        alive = []
        for stat in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if str(out).encode() in stat.read_bytes():
                    alive.append(stat.parent.name)
            except OSError:
                pass
        return alive

    # rank 0 freezes itself (SIGSTOP) after step 11, so the launcher dies at a known step whatever the machine's
    # speed: killed while the ranks run freely, they could pass one more log flush before the signal arrives
    def frozen():
        for pid in ranks_alive():
            try:
                if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "T":
                    return True
            except OSError:
                pass
        return False

    p = ds_launch(small_corpus, out, 1, fault="step:3:STOP@0", resume=True, wait=False)
    log, deadline = tmp_path / "launcher.log", time.time() + 240
    while not frozen():
        assert time.time() < deadline and p.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)  # the launcher only: its ranks are in sessions of their own
    killed = time.time()
    p.wait(timeout=30)
    for pid in ranks_alive():  # rank 0 wakes with the launcher's death signal pending
        os.kill(int(pid), signal.SIGCONT)

    while ranks_alive() and time.time() - killed < 60:
        time.sleep(0.1)
    assert not ranks_alive(), "ranks outlived their launcher"
    text = log.read_text(errors="replace")
    assert "stopped by the launcher's exit after step 12;" in text, text[-3000:]
    assert ds_tags(out) == ["step_00000010", "step_00000012"]

    shard = out / "checkpoints" / "step_00000012" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:1000])  # the newest tag, torn on rank 1 only
    proc = ds_launch(small_corpus, out, 1, resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warn = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: skipping")]
    assert len(warn) == 1 and "step_00000012 (rank 1: zero_pp_rank_1" in warn[0], proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "step_00000010 at step 10" in proc.stderr  # rank 0 as well
    assert_ds_matches(out, ds_reference[1])


def test_deepspeed_zero3_kill_inside_the_first_checkpoint_then_resume_matches(small_corpus, ds_reference, tmp_path):
    """ZeRO 3, 2 ranks: SIGKILL rank 1 after DeepSpeed wrote the first tag (step 2), before its manifest: rank 0's
    part of that tag verifies, rank 1's does not, so both ranks agree there is no checkpoint yet (rank 0 alone
    would have resumed from step 2) and start afresh; the resume equals the uninterrupted run."""
    out = tmp_path / "run"
    proc = ds_launch(small_corpus, out, 3, fault="checkpoint-manifest:1@1")
    assert proc.returncode != 0 and __import__("time").time() - fault_time(out) < 30
    tag = out / "checkpoints" / "step_00000002"
    assert (tag / "manifest_rank00000.json").is_file() and not (tag / "manifest_rank00001.json").exists()
    proc = ds_launch(small_corpus, out, 3, resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1's manifest is missing" in proc.stderr and "starting from step 0" in proc.stderr, proc.stderr[-3000:]
    assert_ds_matches(out, ds_reference[3])


# --- the HF Trainer entry point (examples/run_mlm_sift.py, SiftTrainer) ------------------------------------


def hf_launch(root, out, fault=None, resume=False):
    """examples/run_mlm_sift.py, micro BERT, 8 steps of 4 per epoch, a checkpoint every 2 (a Popen)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SIFT_FAULT_POINT", None)
    if fault:
        env["SIFT_FAULT_POINT"] = fault
    script = Path(__file__).resolve().parents[1] / "examples" / "run_mlm_sift.py"
    argv = [sys.executable, str(script), "--train_file", str(root / "train.txt"), "--tokenizer_name",
            str(root / "tokenizer.json"), "--model_type", "bert", "--config_overrides",
            "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64", "--max_seq_length", "32",
            "--line_by_line", "true", "--per_device_train_batch_size", "8", "--max_steps", "8", "--logging_steps", "1",
            "--max_eval_samples", "16", "--max_train_samples", "32", "--use_cpu", "true", "--report_to", "none",
            "--disable_tqdm", "true", "--learning_rate", "1e-3", "--keep", "0.5", "--exit_layer", "1",
            "--selection", "entropy", "--save_strategy", "steps", "--save_steps", "2", "--output_dir", str(out),
            *(["--resume_from_checkpoint", "last"] if resume else [])]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_hf_trainer_killed_inside_a_checkpoint_resumes_bitwise(tmp_path):
    """SiftTrainer (the example script): SIGKILL inside the step-6 checkpoint write (model, optimizer, RNG
    written; SIFT state and trainer_state.json not). ``--resume_from_checkpoint last`` skips the torn folder
    with one warning (the stock Trainer would pick it), resumes from step 4 (an epoch boundary: the stock
    collator masks on the fly, exact there) and logs bitwise the uninterrupted run's losses, grad norms and
    SIFT fields, ending with the same weights."""
    pytest.importorskip("accelerate")
    pytest.importorskip("datasets")
    from safetensors.torch import load_file

    from sift_fast.data import BUNDLED_CORPUS
    from sift_fast.data.tokenizer import hf_tokenizer

    text = BUNDLED_CORPUS.read_text(encoding="utf-8")[:60_000]
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    tok = hf_tokenizer("train", train_texts=text.splitlines(), vocab_size=512, cache_dir=tmp_path / "cache")
    tok.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    ref, out = tmp_path / "ref", tmp_path / "run"
    procs = [hf_launch(tmp_path, ref), hf_launch(tmp_path, out, fault="checkpoint-write:3")]  # side by side
    (_, ref_err), (_, err) = (p.communicate(timeout=240) for p in procs)
    assert procs[0].returncode == 0, ref_err[-3000:]
    assert procs[1].returncode == -signal.SIGKILL, err[-3000:]
    assert not (out / "checkpoint-6" / "trainer_state.json").exists() and (out / "checkpoint-6").is_dir()
    p = hf_launch(tmp_path, out, resume=True)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-3000:]
    warn = [ln for ln in err.splitlines() if ln.startswith("warning: skipping")]
    assert len(warn) == 1 and "checkpoint-6: cut short while saving" in warn[0], err[-3000:]

    def history(d):
        logs = json.loads((d / "trainer_state.json").read_text())["log_history"]
        return [{k: v for k, v in h.items() if k in ("step", "loss", "grad_norm", "learning_rate") or
                 (k.startswith("sift/") and k != "sift/score_share")} for h in logs if "loss" in h]

    assert [h["step"] for h in history(out)] == list(range(1, 9))
    assert history(out) == history(ref)
    a, b = load_file(ref / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("peer", ["SIGTERM", "time budget", "pause", "own pause"])
def test_multi_rank_stop_is_decided_at_the_log_flush_from_every_rank(peer, micro_cfg, tmp_path):
    """The stop decisions under DeepSpeed, with this rank's peers faked: a SIGTERM, a time budget or a
    --stop-after-s pause seen by another rank only stops this one at the first log flush (step 4), never in
    between."""
    budget = {"time_budget_s": 1e6, "lr_horizon": "steps"} if peer == "time budget" else {}  # far below it
    if peer in ("pause", "own pause"):  # own: this rank's clock passed --stop-after-s, its peer saw nothing
        budget = {"time_budget_s": 2e6, "stop_after_s": 1e6 if peer == "pause" else 1e-9, "lr_horizon": "steps"}
    tr = Trainer(micro_cfg(out=str(tmp_path / "r"), max_steps=12, log_every=4, checkpoint_every=0, **budget))
    tr.engine.world_size = 2  # what the all-reduce would return: the other rank's values
    seen = []

    def any_rank(values):
        seen.append((tr.step, list(values)))
        if peer == "own pause":
            return list(values)  # the peer votes nothing: the all-reduce returns this rank's votes
        return [int(signal.SIGTERM), 0] if peer == "SIGTERM" else [values[0], 1]

    tr.engine.any_rank = any_rank
    summary = tr.run()
    own = [0, 1] if peer == "own pause" else [0, 0]  # this rank's own vote: its clock passed the pause
    assert seen == [(4, own)] and tr.step == 4  # one all-reduce, at the flush
    assert summary.get("stopped_by") == ("SIGTERM" if peer == "SIGTERM" else None)
    assert summary.get("paused_after_s") == {"pause": 1e6, "own pause": 1e-9}.get(peer)
    assert list_checkpoints(tmp_path / "r" / "checkpoints")[-1][0] == 4


def test_multi_rank_lr_progress_is_the_furthest_ranks(micro_cfg, tmp_path):
    """Under DeepSpeed with the LR following the clock (lr_horizon auto, a time budget), every rank takes the
    spent fraction agreed at the start and at each log flush: here a faked peer at 50 % of the budget."""
    tr = Trainer(micro_cfg(out=str(tmp_path / "r"), max_steps=12, log_every=1, checkpoint_every=0,
                           lr_warmup_steps=0, time_budget_s=1e6))
    tr.engine.world_size = 2
    seen = []

    def any_rank(values):
        seen.append(tr.step)
        return [values[0], values[1], max(values[2], 500_000)]

    tr.engine.any_rank = any_rank
    tr.run()
    assert seen == list(range(13))  # once at the start, then at every log flush (every step here)
    lrs = [r["lr"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
           if (r := json.loads(x))["type"] == "step"]
    peak = tr.cfg.optim.lr
    assert lrs == pytest.approx([peak * (1 - max(0.5, i / 12)) for i in range(1, 13)], abs=1e-12)
