"""Telemetry: NVTX wrapper, NVML sampler, profile window, memory stats, step timer."""

from __future__ import annotations

import json
import sys
import time
import types

import pytest
import torch

from sift_fast.errors import ConfigError
from sift_fast.telemetry import (
    NvmlSampler,
    ProfileWindow,
    StepTimer,
    memory_stats,
    nvtx_backend,
    nvtx_mark,
    nvtx_range,
    parse_profile_steps,
    reset_nvtx,
    reset_peak,
)

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _fresh_nvtx(monkeypatch):
    monkeypatch.delenv("SIFT_NVTX", raising=False)
    reset_nvtx()
    yield
    reset_nvtx()


# ---------------------------------------------------------------- nvtx


class _FakeDomain:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def get_event_attributes(self, message=None, color=None, category=None, payload=None):
        return ("attrs", message)

    def push_range(self, attributes):
        self.log.append(("push", self.name, attributes[1]))

    def pop_range(self):
        self.log.append(("pop", self.name))

    def mark(self, attributes):
        self.log.append(("mark", self.name, attributes[1]))


def _fake_nvtx(monkeypatch, domain_cls=_FakeDomain):
    log: list[tuple] = []
    mod = types.ModuleType("nvtx")
    mod.get_domain = lambda name=None: domain_cls(name, log)
    mod.enabled = lambda: True
    monkeypatch.setitem(sys.modules, "nvtx", mod)
    return log


def test_nvtx_noop_without_package_on_cpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvtx", None)  # import nvtx -> ImportError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with nvtx_range("forward"):
        with nvtx_range("forward"):
            pass
    nvtx_mark("eval")
    assert nvtx_backend() == "none"
    assert nvtx_range("data") is nvtx_range("score")  # one shared null object, nothing allocated


def test_nvtx_package_domain_push_pop_order(monkeypatch):
    log = _fake_nvtx(monkeypatch)
    with nvtx_range("forward"):
        with nvtx_range("backward"):
            nvtx_mark("select")
    assert nvtx_backend() == "nvtx"
    assert log == [
        ("push", "sift_fast", "forward"),
        ("push", "sift_fast", "backward"),
        ("mark", "sift_fast", "select"),
        ("pop", "sift_fast"),
        ("pop", "sift_fast"),
    ]
    assert nvtx_range("forward") is nvtx_range("forward")  # cached per name


def test_nvtx_pops_on_exception(monkeypatch):
    log = _fake_nvtx(monkeypatch)
    with pytest.raises(ValueError), nvtx_range("data"):
        raise ValueError("boom")
    assert log == [("push", "sift_fast", "data"), ("pop", "sift_fast")]


def test_nvtx_env_disables(monkeypatch):
    log = _fake_nvtx(monkeypatch)
    monkeypatch.setenv("SIFT_NVTX", "0")
    with nvtx_range("forward"):
        nvtx_mark("x")
    assert log == []
    assert nvtx_backend() == "none"


def test_nvtx_no_tool_attached_is_noop(monkeypatch):
    class DummyDomain(_FakeDomain):  # what the real package returns without nsys/ncu
        pass

    log = _fake_nvtx(monkeypatch, DummyDomain)
    with nvtx_range("forward"):
        pass
    assert log == [] and nvtx_backend() == "none"


def test_nvtx_torch_fallback(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvtx", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    log: list[tuple] = []
    monkeypatch.setattr(torch.cuda.nvtx, "range_push", lambda msg: log.append(("push", msg)))
    monkeypatch.setattr(torch.cuda.nvtx, "range_pop", lambda: log.append(("pop",)))
    monkeypatch.setattr(torch.cuda.nvtx, "mark", lambda msg: log.append(("mark", msg)))
    with nvtx_range("optimizer"):
        nvtx_mark("m")
    assert nvtx_backend() == "torch"
    assert log == [("push", "optimizer"), ("mark", "m"), ("pop",)]


# ---------------------------------------------------------------- nvml


def _notice_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("NVML unavailable:")]


def test_nvml_without_pynvml(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    sampler = NvmlSampler()
    sampler.start()
    sampler.start()
    assert sampler.summary() is None
    sampler.stop()
    sampler.stop()
    err = capsys.readouterr().err
    lines = _notice_lines(err)
    assert len(lines) == 1 and lines[0].endswith("; GPU telemetry disabled")
    assert err.strip() == lines[0]


def test_nvml_library_missing(monkeypatch, capsys):
    mod = types.ModuleType("pynvml")

    def init():
        raise OSError("NVML Shared Library Not Found")

    mod.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    with NvmlSampler(interval_s=0.01) as sampler:
        assert not sampler.available
        assert sampler.summary() is None
    assert _notice_lines(capsys.readouterr().err) == [
        "NVML unavailable: NVML Shared Library Not Found; GPU telemetry disabled"
    ]


def _fake_pynvml(monkeypatch):
    state = {"util": [], "mem": [], "power": [], "clock": [], "shutdown": 0, "handle_index": None}
    mod = types.ModuleType("pynvml")
    mod.NVML_CLOCK_SM = 1
    mod.nvmlInit = lambda: None

    def handle(i):
        state["handle_index"] = i
        return "h"

    def util(h):
        v = 10 + 7 * (len(state["util"]) % 5)
        state["util"].append(v)
        return types.SimpleNamespace(gpu=v, memory=0)

    def mem(h):
        v = (1000 + len(state["mem"])) * 1024 * 1024  # bytes
        state["mem"].append(v)
        return types.SimpleNamespace(used=v, total=0, free=0)

    def power(h):
        v = 150_000 + 1000 * len(state["power"])  # mW
        state["power"].append(v)
        return v

    def clock(h, kind):
        assert kind == mod.NVML_CLOCK_SM
        v = 1400 + len(state["clock"])
        state["clock"].append(v)
        return v

    def shutdown():
        state["shutdown"] += 1

    mod.nvmlDeviceGetHandleByIndex = handle
    mod.nvmlDeviceGetUtilizationRates = util
    mod.nvmlDeviceGetMemoryInfo = mem
    mod.nvmlDeviceGetPowerUsage = power
    mod.nvmlDeviceGetClockInfo = clock
    mod.nvmlShutdown = shutdown
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    return state


def _mean(xs):
    return sum(xs) / len(xs)


def test_nvml_fake_summary(monkeypatch, capsys):
    state = _fake_pynvml(monkeypatch)
    sampler = NvmlSampler(device_index=3, interval_s=0.002).start()
    deadline = time.monotonic() + 10
    while len(state["clock"]) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    sampler.stop()
    assert not sampler._thread and state["shutdown"] == 1 and state["handle_index"] == 3
    s = sampler.summary()
    n = len(state["util"])
    assert n >= 4 and s["nvml_samples"] == n
    assert s["gpu_util_pct_mean"] == pytest.approx(_mean(state["util"]))
    assert s["gpu_util_pct_max"] == max(state["util"])
    assert s["gpu_mem_used_mib_mean"] == pytest.approx(_mean(state["mem"]) / 2**20)
    assert s["gpu_mem_used_mib_max"] == pytest.approx(1000 + n - 1)
    assert s["gpu_power_w_mean"] == pytest.approx(_mean(state["power"]) / 1000)
    assert s["gpu_power_w_max"] == pytest.approx(150 + n - 1)
    assert s["gpu_sm_clock_mhz_mean"] == pytest.approx(_mean(state["clock"]))
    assert sampler.summary() is None  # reset after each summary
    assert capsys.readouterr().err == ""


def test_nvml_unsupported_metric_is_skipped(monkeypatch):
    state = _fake_pynvml(monkeypatch)

    def no_power(h):
        raise RuntimeError("Not Supported")

    sys.modules["pynvml"].nvmlDeviceGetPowerUsage = no_power
    with NvmlSampler(interval_s=0.002) as sampler:
        deadline = time.monotonic() + 10
        while len(state["util"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
    s = sampler.summary()
    assert "gpu_power_w_mean" not in s and s["gpu_util_pct_mean"] > 0


# ---------------------------------------------------------------- profile


def test_parse_profile_steps_valid():
    assert parse_profile_steps("10:12") == (10, 12)
    assert parse_profile_steps("0:1") == (0, 1)
    assert parse_profile_steps(None) is None


@pytest.mark.parametrize("spec", ["12:10", "5:5", "a:b", "5", "-1:3", "", "1:2:3", "1.5:3"])
def test_parse_profile_steps_invalid(spec):
    with pytest.raises(ConfigError) as info:
        parse_profile_steps(spec)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("--profile-steps expects A:B") and repr(spec) in msg


def _run_steps(window: ProfileWindow, steps) -> None:
    a = torch.randn(64, 64)
    for step in steps:
        window.step_begin(step)
        with torch.profiler.record_function(f"train_step_{step}"):
            for _ in range(3):
                a = torch.tanh(a @ a)
        window.step_end(step)


def _event_names(path) -> set[str]:
    with open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    assert events
    return {e.get("name", "") for e in events}


def test_profile_window_cpu_trace(tmp_path):
    window = ProfileWindow((1, 2), str(tmp_path))
    _run_steps(window, range(5))
    window.close()
    assert [p.name for p in tmp_path.iterdir()] == ["trace_steps_1-2.json"]
    assert window.trace_path == str(tmp_path / "trace_steps_1-2.json")
    steps = {n for n in _event_names(window.trace_path) if n.startswith("train_step_")}
    assert steps == {"train_step_1", "train_step_2"}


def test_profile_window_closed_inside_window(tmp_path):
    with ProfileWindow((1, 10), str(tmp_path)) as window:
        _run_steps(window, range(3))
        assert window.active
    assert not window.active
    steps = {n for n in _event_names(tmp_path / "trace_steps_1-2.json") if n.startswith("train_step_")}
    assert steps == {"train_step_1", "train_step_2"}


def test_profile_window_cuda_profiler_calls(monkeypatch):
    calls: list[tuple] = []
    cudart = types.SimpleNamespace(
        cudaProfilerStart=lambda: calls.append(("start", current)),
        cudaProfilerStop=lambda: calls.append(("stop", current)),
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "cudart", lambda: cudart)
    window = ProfileWindow((2, 3))
    for current in range(6):
        window.step_begin(current)
        window.step_end(current)
    window.close()
    assert calls == [("start", 2), ("stop", 3)]


def test_profile_window_disabled_and_misconfigured(tmp_path):
    window = ProfileWindow(None)
    _run_steps(window, range(3))
    window.close()
    assert window.trace_path is None
    with pytest.raises(ConfigError):
        ProfileWindow(None, str(tmp_path))


# ---------------------------------------------------------------- memory


def test_memory_stats_cpu():
    stats = memory_stats(torch.device("cpu"))
    assert stats["mem_peak_rss_mib"] > 1
    assert 1 < stats.get("mem_rss_mib", 2) <= stats["mem_peak_rss_mib"] * 1.5
    reset_peak(torch.device("cpu"))


# ---------------------------------------------------------------- timer


def test_step_timer_cpu(monkeypatch):
    log = _fake_nvtx(monkeypatch)
    timer = StepTimer("cpu")
    assert not timer.uses_cuda_events
    for _ in range(2):
        with timer.phase("score"):
            time.sleep(0.02)
        with timer.phase("forward"):
            pass
    res = timer.results()
    assert set(res) == {"score", "forward"}
    assert 0.03 <= res["score"] < 5 and 0 <= res["forward"] < res["score"]
    assert timer.results() == {}  # reset by results()
    assert log[:2] == [("push", "sift_fast", "score"), ("pop", "sift_fast")]
    with timer.phase("eval"):
        pass
    timer.reset()
    assert timer.results() == {}


# ---------------------------------------------------------------- GPU


@gpu
@needs_cuda
def test_step_timer_cuda_events_no_sync():
    timer = StepTimer(torch.device("cuda"))
    assert timer.uses_cuda_events
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with timer.phase("sleep"):
        torch.cuda._sleep(100_000_000)  # tens of ms of GPU time
    host = time.perf_counter() - t0
    res = timer.results()
    assert res["sleep"] > 0.01
    assert host < res["sleep"]  # the phase did not wait for the GPU


@gpu
@needs_cuda
def test_step_timer_cuda_many_phases_reuse_events():
    timer = StepTimer("cuda")
    x = torch.randn(256, 256, device="cuda")
    for _ in range(300):  # crosses the opportunistic drain threshold
        with timer.phase("mm"):
            x = torch.tanh(x @ x)
        with timer.phase("other"):
            pass
    res = timer.results()
    assert res["mm"] > 0 and res["other"] >= 0
    assert not timer._pending and len(timer._free_events) >= 4


@gpu
@needs_cuda
def test_memory_stats_cuda():
    dev = torch.device("cuda")
    reset_peak(dev)
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device=dev)
    stats = memory_stats(dev)
    assert stats["mem_allocated_mib"] >= 64 and stats["mem_peak_allocated_mib"] >= 64
    assert stats["mem_reserved_mib"] >= stats["mem_allocated_mib"]
    del x


@gpu
@needs_cuda
def test_profile_window_cuda_trace(tmp_path):
    window = ProfileWindow((1, 2), str(tmp_path))
    a = torch.randn(256, 256, device="cuda")
    for step in range(4):
        window.step_begin(step)
        a = torch.tanh(a @ a)
        window.step_end(step)
    window.close()
    assert _event_names(tmp_path / "trace_steps_1-2.json")


@gpu
@needs_cuda
def test_nvml_real_gpu():
    pytest.importorskip("pynvml")
    with NvmlSampler(device_index=torch.cuda.current_device(), interval_s=0.05) as sampler:
        time.sleep(0.3)
    s = sampler.summary()
    assert s is not None and s["gpu_mem_used_mib_max"] > 0 and s["nvml_samples"] >= 1
