"""examples/run_mlm_sift.py end to end (in-process, micro BERT, a slice of the bundled corpus) and its error lines."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate", reason="the Trainer needs accelerate (pip install -e .[hf])")
pytest.importorskip("datasets", reason="the example reads text through datasets (pip install -e .[hf])")

from sift_fast.data import BUNDLED_CORPUS  # noqa: E402
from sift_fast.data.tokenizer import hf_tokenizer  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "run_mlm_sift.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("run_mlm_sift", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_mlm_sift"] = mod  # dataclasses resolve the annotations through sys.modules
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("run_mlm_sift", None)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("example")
    text = BUNDLED_CORPUS.read_text(encoding="utf-8")[:60_000]
    (root / "train.txt").write_text(text, encoding="utf-8")
    tok = hf_tokenizer("train", train_texts=text.splitlines(), vocab_size=512, cache_dir=root / "cache")
    tok.backend_tokenizer.save(str(root / "tokenizer.json"))
    return root


def _argv(root, out, *extra):
    return ["--train_file", str(root / "train.txt"), "--tokenizer_name", str(root / "tokenizer.json"),
            "--model_type", "bert", "--config_overrides",
            "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64",
            "--max_seq_length", "32", "--line_by_line", "true", "--per_device_train_batch_size", "8",
            "--max_steps", "4", "--logging_steps", "2", "--max_eval_samples", "16", "--output_dir", str(out),
            "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--learning_rate", "1e-3",
            "--keep", "0.5", "--exit_layer", "1", *extra]


def test_example_runs_end_to_end(script, inputs, tmp_path):
    import transformers

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert script.main(_argv(inputs, tmp_path / "out", "--selection", "loss")) == 0
    finally:
        torch.set_num_threads(n)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "loss" in h]
    assert [h["step"] for h in logs] == [2, 4]
    # the default select_until 0.1 of max_steps 4: step 0 keeps 4 of 8, steps 1-3 (past 0.1) all 8
    assert logs[0]["sift/backprop_samples"] == 4 + 8 and logs[0]["sift/kept_fraction"] == 0.75
    assert logs[-1]["sift/backprop_samples"] == 4 + 3 * 8 and logs[-1]["sift/kept_fraction"] == 1.0
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_loss"] > 0
    model = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    assert type(model).__name__ == "BertForMaskedLM" and model.config.num_hidden_layers == 2


@pytest.mark.parametrize("extra,needle", [
    (["--keep", "1.5"], "keep must be in (0, 1]"),
    (["--exit_layer", "5"], "--exit_layer 5 is past the model's 2 layers"),
    (["--train_file", "/nonexistent/x.txt"], "--train_file: file not found"),
])
def test_example_misuse_is_one_line(script, inputs, tmp_path, capsys, extra, needle):
    assert script.main(_argv(inputs, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
