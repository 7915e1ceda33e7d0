"""CLI contract: bad input is one clear stderr line and exit code 2; config precedence; flag names."""

import json
import subprocess
import sys

import pytest

from sift_fast.cli.args import run_cli
from sift_fast.cli.pretrain import _main as pretrain_main
from sift_fast.cli.pretrain import build_parser
from sift_fast.config import build_config, field_owner


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        sys.exit(run_cli("sift-pretrain", pretrain_main, argv))
    err = capsys.readouterr().err.strip().splitlines()
    return exc.value.code, err


@pytest.fixture
def bad_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    notvocab = tmp_path / "vocab.txt"
    notvocab.write_bytes(b"\x00\x01\x02binary\xff")
    badkey = tmp_path / "cfg.json"
    badkey.write_text(json.dumps({"sift": {"kepp": 0.5}}))
    return {"empty": str(empty), "notvocab": str(notvocab), "badkey": str(badkey), "out": str(tmp_path / "o")}


CASES = {
    "missing corpus": (["--data", "/no/such/corpus.txt"], "not found"),
    "empty corpus": (["--data", "{empty}"], "empty"),
    "not a vocab": (["--vocab", "{notvocab}"], "vocab"),
    "keep 0": (["--keep", "0"], "keep must be in (0, 1]"),
    "keep 1.5": (["--keep", "1.5"], "keep must be in (0, 1]"),
    "exit layer 0": (["--exit-layer", "0"], "exit_layer"),
    "exit layer > L": (["--preset", "micro", "--exit-layer", "3"], "exit_layer must be in [1, 2]"),
    "candidates 0": (["--candidates", "0"], "candidates must be >= 1"),
    "unknown preset": (["--preset", "huge"], "unknown preset"),
    "unknown config key": (["--config", "{badkey}"], "unknown config key sift.kepp"),
    "unknown flag": (["--kepp", "0.5"], "unrecognized arguments"),
    "bad float": (["--keep", "half"], "invalid float value"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2(name, bad_files, capsys):
    argv, needle = CASES[name]
    argv = [a.format(**bad_files) for a in argv] + ["--out", bad_files["out"], "--max-steps", "1"]
    code, err = run(argv, capsys)
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("sift-pretrain: error:") and needle in err[0], err


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sift_fast.pretrain", "--keep", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "sift-pretrain: error: keep must be in (0, 1]; got 2.0"


def test_contract_flags_exist():
    flags = {s for a in build_parser()._actions for s in a.option_strings}
    for f in ("--preset", "--data", "--vocab", "--selection", "--keep", "--exit-layer", "--candidates",
              "--max-steps", "--eval-every", "--checkpoint-every", "--seed", "--out", "--resume", "--config",
              "--score-tokens", "--overlap", "--profile-steps", "--selection-scope"):
        assert f in flags, f


def test_precedence_preset_then_file_then_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("preset: micro\nsift:\n  keep: 0.25\n  candidates: 16\nlr: 0.5\n")
    args = build_parser().parse_args(["--config", str(cfg_file), "--candidates", "12"])
    from sift_fast.cli.args import config_from_args

    cfg = config_from_args(args)
    assert cfg.preset == "micro" and cfg.model.num_layers == 2  # preset from the file
    assert cfg.sift.keep == 0.25 and cfg.optim.lr == 0.5  # nested and flat file keys
    assert cfg.sift.candidates == 12  # the flag wins
    assert cfg.sift.backprop_size == 3


def test_field_names_unique_and_round_trip():
    owner = field_owner()
    assert owner["keep"] == "sift" and owner["data"] == "data"
    cfg = build_config({"preset": "tiny-cpu", "keep": 0.3})
    again = build_config(cfg.to_dict())
    assert again == cfg
