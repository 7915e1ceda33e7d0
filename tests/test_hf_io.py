"""In and out of the Hugging Face format from our CLI: ``--export-hf`` / ``sift-export`` (save_pretrained model,
tokenizer, model card) and ``--init-from DIR`` (continued pretraining). References: the trained model in
memory (weights bitwise, the MLM loss of ``BertForMaskedLM(labels=...)`` to 1e-6), an uninterrupted run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sift_fast.cli.args import run_cli
from sift_fast.config import build_config

transformers = pytest.importorskip("transformers")


def _cfg(small_corpus, out: Path, **kw):
    return build_config({"preset": "micro", "corpus": small_corpus["data"], "cache_dir": small_corpus["cache_dir"],
                         "out": str(out), "log_every": 1, "eval_every": 1000,
                         "max_steps": 4, **kw})


@pytest.fixture(scope="module")
def exported(small_corpus, tmp_path_factory):
    from sift_fast.train.loop import Trainer

    root = tmp_path_factory.mktemp("hf_io")
    trainer = Trainer(_cfg(small_corpus, root / "run", export_hf=str(root / "hf"), selection="loss", keep=0.5))
    trainer.run()
    return trainer, root


def _losses(out: Path) -> list[float]:
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["type"] == "step"]


def _same_mlm_loss(ours, hf, batch) -> None:
    """Our model's MLM loss on ``batch`` equals the HF model's ``labels=`` loss (−100 off the masked rows)."""
    labels = torch.full_like(batch.input_ids, -100).view(-1)
    labels[batch.masked_index] = batch.masked_targets
    with torch.no_grad():
        mine = ours(batch.input_ids, batch.attention_mask, batch.masked_index, batch.masked_targets).loss
        theirs = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    labels=labels.view_as(batch.input_ids)).loss
    assert abs(float(mine) - float(theirs)) <= 1e-6


def test_export_round_trip_weights_and_loss(exported, tmp_path):
    trainer, root = exported
    ours = trainer.engine.module.eval()
    hf = transformers.AutoModelForMaskedLM.from_pretrained(root / "hf").eval()
    assert type(hf) is transformers.BertForMaskedLM
    want = ours.hf.state_dict()
    got = hf.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    _same_mlm_loss(ours, hf, trainer.val_batches[0])
    tok = transformers.AutoTokenizer.from_pretrained(root / "hf")
    assert tok.mask_token == "[MASK]" and tok.pad_token_id == trainer.data.vocab.pad_id
    card = (root / "hf" / "README.md").read_text()
    assert "| selection | loss |" in card and "| keep | 0.5 |" in card and "| steps | 4 |" in card
    # sift-export of the run directory: the same weights (from the checkpoint on disk)
    from sift_fast.cli.export import _main

    assert run_cli("sift-export", _main, ["--checkpoint", str(root / "run"), "--out", str(tmp_path / "e")]) == 0
    again = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "e").state_dict()
    assert all(torch.equal(again[k], want[k]) for k in want)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp directory left


def test_init_from_takes_the_model_and_continues_with_the_same_loss(exported, small_corpus, tmp_path):
    from sift_fast.train.loop import Trainer

    trainer, root = exported
    cfg = build_config({"preset": "proxy-12", "init_from": str(root / "hf")})  # the directory beats the preset
    m = cfg.model
    assert (m.num_layers, m.hidden_size, m.num_heads, m.intermediate_size) == (2, 32, 2, 64)
    assert cfg.data.vocab == str(root / "hf") and cfg.data.vocab_size == 512
    cont = Trainer(_cfg(small_corpus, tmp_path / "cont", init_from=str(root / "hf"), selection="loss", keep=0.5))
    assert all(torch.equal(a, b) for a, b in zip(cont.engine.module.parameters(), trainer.engine.module.parameters()))
    first = cont.run_eval()
    assert abs(first["val_loss"] - trainer.last_eval["val_loss"]) <= 1e-6
    assert first["val_mlm_acc"] == trainer.last_eval["val_mlm_acc"]
    # a BertForPreTraining directory (MLM + next-sentence heads) loads as one, its MLM head driven
    pre_dir = tmp_path / "pretraining"
    transformers.BertForPreTraining.from_pretrained(root / "hf").save_pretrained(pre_dir)
    shutil.copy(root / "hf" / "tokenizer.json", pre_dir)
    pre = Trainer(_cfg(small_corpus, tmp_path / "pre", init_from=str(pre_dir)))
    assert pre.cfg.model.model_class == "pretraining" and type(pre.engine.module.hf) is transformers.BertForPreTraining
    assert abs(pre.run_eval()["val_loss"] - trainer.last_eval["val_loss"]) <= 1e-6


def test_init_from_resume_is_bitwise(exported, small_corpus, tmp_path):
    from sift_fast.train.loop import Trainer

    _, root = exported
    kw = dict(init_from=str(root / "hf"), selection="entropy", keep=0.5, dropout=0.1, checkpoint_every=2)
    full = Trainer(_cfg(small_corpus, tmp_path / "full", **kw))
    full.run()
    res_dir = tmp_path / "resumed"
    (res_dir / "checkpoints").mkdir(parents=True)
    for name in ("step_00000002.pt", "step_00000002.json"):
        shutil.copy(tmp_path / "full" / "checkpoints" / name, res_dir / "checkpoints")
    shutil.copy(tmp_path / "full" / "metrics.jsonl", res_dir / "metrics.jsonl")
    resumed = Trainer(_cfg(small_corpus, res_dir, resume=True, **kw))
    resumed.run()
    assert _losses(res_dir) == _losses(tmp_path / "full") and len(_losses(res_dir)) == 4
    assert all(torch.equal(a, b) for a, b in zip(full.engine.module.parameters(), resumed.engine.module.parameters()))


def _one_error(capfd, rc: int, *needles: str) -> str:
    err = capfd.readouterr().err
    lines = [x for x in err.splitlines() if "error:" in x]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def test_bad_inputs_are_one_line(exported, small_corpus, tmp_path, capfd):
    from sift_fast.cli.export import _main as export_main
    from sift_fast.cli.pretrain import _main as pretrain_main

    _, root = exported
    hf = root / "hf"
    base = ["--preset", "micro", "--data", small_corpus["data"], "--cache-dir", small_corpus["cache_dir"],
            "--max-steps", "2", "--out", str(tmp_path / "o")]

    def pretrain(*extra: str) -> int:
        return run_cli("sift-pretrain", pretrain_main, [*base, *extra])

    _one_error(capfd, pretrain("--init-from", str(tmp_path / "nope")), "--init-from", "no such directory")
    _one_error(capfd, pretrain("--init-from", str(hf), "--num-layers", "3"), "--num-layers 3 contradicts",
               "num_layers 2")
    _one_error(capfd, pretrain("--init-from", str(hf), "--seq-len", "1024"), "--seq-len 1024", "512 positions")
    _one_error(capfd, pretrain("--init-from", str(hf), "--vocab", "train"), "--vocab train contradicts")
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    _one_error(capfd, pretrain("--init-from", str(gpt)), "GPT2LMHeadModel has no masked-LM head")
    headless = tmp_path / "headless"  # backbone-only weights, the config naming no architecture
    transformers.BertModel(transformers.BertConfig.from_pretrained(hf)).save_pretrained(headless)
    shutil.copy(hf / "tokenizer.json", headless)
    cfg = json.loads((headless / "config.json").read_text())
    cfg.pop("architectures")
    (headless / "config.json").write_text(json.dumps(cfg))
    _one_error(capfd, pretrain("--init-from", str(headless)), "no MLM head", "cls.predictions")
    torn_dir = tmp_path / "torn_hf"
    shutil.copytree(hf, torn_dir)
    data = (torn_dir / "model.safetensors").read_bytes()
    (torn_dir / "model.safetensors").write_bytes(data[: len(data) // 2])
    _one_error(capfd, pretrain("--init-from", str(torn_dir)), "cannot load its weights")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    _one_error(capfd, pretrain("--export-hf", str(busy)), "--export-hf", "not a Hugging Face export")

    def export(*argv: str) -> int:
        return run_cli("sift-export", export_main, list(argv))

    _one_error(capfd, export("--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "x")), "no such file")
    torn = tmp_path / "torn" / "checkpoints"
    torn.mkdir(parents=True)
    src = next((root / "run" / "checkpoints").glob("step_*.pt"))
    shutil.copy(src.with_suffix(".json"), torn)
    (torn / src.name).write_bytes(src.read_bytes()[:1000])
    _one_error(capfd, export("--checkpoint", str(torn / src.name), "--out", str(tmp_path / "x")), "torn or corrupt")
    _one_error(capfd, export("--checkpoint", str(root / "run"), "--out", str(busy)), "--out", "not a Hugging Face")
    assert not (tmp_path / "x").exists()


def test_roberta_round_trip_and_checkpoints_without_hf_config(small_corpus, tmp_path):
    """RoBERTa exports as RobertaForMaskedLM (tied decoder, offset positions); a checkpoint from before
    ``hf_config`` was stored is rebuilt from its config and gives the same weights."""
    from sift_fast.export import model_from_state, read_checkpoint
    from sift_fast.train.loop import Trainer

    trainer = Trainer(_cfg(small_corpus, tmp_path / "run", arch="roberta", max_steps=2,
                           export_hf=str(tmp_path / "hf")))
    trainer.run()
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf) is transformers.RobertaForMaskedLM
    ours = trainer.engine.module.eval()
    want = ours.hf.state_dict()
    assert all(torch.equal(hf.state_dict()[k], want[k]) for k in want)
    _same_mlm_loss(ours, hf, trainer.val_batches[0])
    assert build_config({"init_from": str(tmp_path / "hf")}).model.arch == "roberta"
    state, weights, _ = read_checkpoint(tmp_path / "run")
    state.pop("hf_config")
    old = model_from_state(state, weights)
    assert type(old.hf) is transformers.RobertaForMaskedLM
    assert all(torch.equal(old.hf.state_dict()[k], want[k]) for k in want)
