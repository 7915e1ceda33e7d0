"""SiftTrainer: SIFT inside transformers.Trainer, checked against sift_fast's own selection and hand-built losses.

Micro BERT / RoBERTa (2 layers, width 32) over the bundled vocab and corpus, CPU, a few steps each.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("accelerate", reason="the Trainer needs accelerate (pip install -e .[hf])")

import transformers as T  # noqa: E402

from sift_fast.config import SiftConfig  # noqa: E402
from sift_fast.data import BUNDLED_CORPUS  # noqa: E402
from sift_fast.data.batch import make_batch  # noqa: E402
from sift_fast.data.tokenizer import hf_tokenizer  # noqa: E402
from sift_fast.errors import ConfigError  # noqa: E402
from sift_fast.hf import STATE_FILE, SiftArguments, SiftTrainer  # noqa: E402
from sift_fast.models.hf import adapter_for  # noqa: E402
from sift_fast.scoring import score_candidates, score_positions  # noqa: E402
from sift_fast.selection import Selector  # noqa: E402
from sift_fast.train.checkpoint import safe_load  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Micro models run fastest on one thread (and a shared CPU makes two threads spin)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A 512-entry WordPiece trained on a slice of the bundled corpus (the bundled 30k vocab is slow here)."""
    text = BUNDLED_CORPUS.read_text(encoding="utf-8")[:150_000].splitlines()
    return hf_tokenizer("train", train_texts=text, vocab_size=512, cache_dir=tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def lines():
    text = BUNDLED_CORPUS.read_text(encoding="utf-8")[:200_000]
    return [ln for ln in text.splitlines() if len(ln) > 60][:256]


def examples(tok, lines, n=64, *, max_length=24, token_types="zeros"):
    """Variable-length tokenized rows; token_types: zeros (the tokenizer's), random 0/1 segments, or absent."""
    enc = tok(lines[:n], truncation=True, max_length=max_length)
    g = torch.Generator().manual_seed(0)
    rows = []
    for ids in enc["input_ids"]:
        row = {"input_ids": ids}
        if token_types == "random":
            cut = int(torch.randint(1, len(ids), (1,), generator=g))
            row["token_type_ids"] = [0] * cut + [1] * (len(ids) - cut)
        elif token_types == "zeros":
            row["token_type_ids"] = [0] * len(ids)
        rows.append(row)
    return rows


def micro_model(tok, kind="bert", dropout=0.0, seed=0):
    common = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                  pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    if kind == "roberta":
        return T.RobertaForMaskedLM(T.RobertaConfig(max_position_embeddings=66, type_vocab_size=1, **common))
    cfg = T.BertConfig(max_position_embeddings=64, **common)
    return T.BertForPreTraining(cfg) if kind == "pretraining" else T.BertForMaskedLM(cfg)


def targs(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, max_steps=2, logging_steps=1,
                report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, max_grad_norm=0.0,
                learning_rate=1e-3, seed=0, dataloader_num_workers=0)
    base.update(kw)
    return T.TrainingArguments(**base)


class Recording(SiftTrainer):
    """Records what each selection saw: the candidate batch, the weights, the plan step, kept rows and scores."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls, self.windows = [], []

    def sift_select(self, inputs):
        rec = {"inputs": {k: v.clone() for k, v in inputs.items()}, "step": self.state.global_step,
               "weights": copy.deepcopy(self.sift_adapter.hf.state_dict())}
        self.sift_last_kept, self.sift_last_scores = None, None
        out = super().sift_select(inputs)
        rec.update(kept=self.sift_last_kept, scores=self.sift_last_scores, out=out)
        self.calls.append(rec)
        return out

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, n = super().get_batch_samples(epoch_iterator, num_batches, device)
        self.windows.append((batches, n))
        return batches, n


def brute_force_entropy(hf_model, inputs, k):
    """fp64 eval-mode reference: full model's hidden state k → MLM head on every position → per-row mean entropy
    over the masked positions."""
    m = copy.deepcopy(hf_model).double().eval()
    kw = {key: inputs[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in inputs}
    base = m.roberta if hasattr(m, "roberta") else m.bert
    h = base(**kw, output_hidden_states=True).hidden_states[k]
    logits = m.lm_head(h) if hasattr(m, "roberta") else m.cls.predictions(h)
    logp = torch.log_softmax(logits, -1)
    ent = -(logp.exp() * logp).sum(-1)
    mask = inputs["labels"] != -100
    return torch.stack([ent[i][mask[i]].mean() for i in range(ent.shape[0])])


@pytest.mark.parametrize("kind,token_types,score_tokens",
                         [("bert", "random", 0), ("pretraining", "absent", 0), ("roberta", "absent", 2)])
def test_selection_equals_sift_selector(tok, lines, tmp_path, kind, token_types, score_tokens):
    """Under the Trainer: scores = fp64 brute force (dropout off); kept rows = sift_fast's Selector on that batch."""
    model = micro_model(tok, kind, dropout=0.2)
    sift = SiftArguments(selection="entropy", keep=0.5, exit_layer="1", interrupt_every=3, select_until=1.0,
                         score_tokens=score_tokens)
    tr = Recording(model=model, args=targs(tmp_path, max_steps=3, gradient_accumulation_steps=2),
                   train_dataset=examples(tok, lines, token_types=token_types),
                   data_collator=T.DataCollatorForLanguageModeling(tok, mlm_probability=0.25), sift_args=sift)
    tr.train()
    assert len(tr.calls) == 6
    cfg, ref_sel = sift.sift_config(8), Selector(sift.sift_config(8), seed=0)
    for rec in tr.calls:
        inp = rec["inputs"]
        assert ("token_type_ids" in inp) == (token_types != "absent")
        ref_model = micro_model(tok, kind)
        ref_model.load_state_dict(rec["weights"])
        enc = adapter_for(ref_model)
        batch = make_batch(inp["input_ids"].numpy(), inp["labels"].numpy(), range(8), tok.pad_token_id)
        assert torch.equal(batch.attention_mask, inp["attention_mask"])  # padded: the collator's mask
        batch.token_type_ids = inp.get("token_type_ids")
        plan = ref_sel.plan(rec["step"])
        scores = None
        if plan.mode == "score":
            scores = score_candidates(enc, batch, 1, "entropy", positions=score_positions(ref_sel, cfg, batch))
            if not score_tokens:  # all masked tokens scored: the brute force applies
                torch.testing.assert_close(rec["scores"].double(), brute_force_entropy(ref_model, inp, 1),
                                           rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(rec["scores"], scores, rtol=0, atol=0)
        else:
            assert rec["scores"] is None and plan.mode == "uniform" and rec["step"] % 3 == 2
        kept = ref_sel.selection(plan, batch, scores).kept
        assert torch.equal(rec["kept"], kept) and kept.numel() == 4
        for key, v in rec["out"].items():
            assert torch.equal(v, inp[key][kept])


def test_grad_accumulation_equals_mean_over_kept(tok, lines, tmp_path):
    """GA 3: one optimizer step's gradient = gradient of the mean loss over all kept tokens of the window
    (fp64 hand-built reference, 1e-6); num_items_in_batch counts only the kept tokens."""
    model = micro_model(tok)
    init = copy.deepcopy(model)
    grads = {}

    class Grab(T.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kw):
            if not grads:
                grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

    sift = SiftArguments(selection="loss", keep=0.5, exit_layer="1")
    tr = Recording(model=model, args=targs(tmp_path, max_steps=1, per_device_train_batch_size=6,
                                           gradient_accumulation_steps=3),
                   train_dataset=examples(tok, lines, token_types="zeros"),
                   data_collator=T.DataCollatorForLanguageModeling(tok, mlm_probability=0.2), sift_args=sift,
                   callbacks=[Grab()])
    tr.train()
    (kept_batches, num_items), = tr.windows
    cand_tokens = sum(int((c["inputs"]["labels"] != -100).sum()) for c in tr.calls)
    kept_tokens = sum(int((b["labels"] != -100).sum()) for b in kept_batches)
    assert len(kept_batches) == 3 and all(b["input_ids"].shape[0] == 3 for b in kept_batches)
    assert int(num_items) == kept_tokens < cand_tokens
    ref = init.double().train()
    total = 0.0
    for b in kept_batches:
        logits = ref(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                     token_type_ids=b["token_type_ids"]).logits
        total = total + torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["labels"].reshape(-1),
                                                          ignore_index=-100, reduction="sum")
    (total / kept_tokens).backward()
    assert grads and set(grads) == {n for n, p in ref.named_parameters() if p.grad is not None}
    worst = max((grads[n].double() - p.grad).abs().max().item() for n, p in ref.named_parameters() if n in grads)
    assert worst < 1e-6
    # logged: SIFT fields in the Trainer's own log history
    log = tr.state.log_history[0]
    assert log["sift/backprop_samples"] == 9 and log["sift/candidates"] == 18 and log["sift/kept_fraction"] == 0.5
    assert log["sift/exit_layer"] == 1 and "sift/kept_score_ratio" in log and 0 < log["sift/score_share"] < 1
    assert abs(log["loss"] - (total / kept_tokens).item()) < 1e-5


def test_eval_untouched(tok, lines, tmp_path):
    """evaluate() with compute_metrics: the stock Trainer's numbers, no selection, no selector RNG use."""
    data = examples(tok, lines, n=32)
    coll = T.DataCollatorForLanguageModeling(tok, mlm_probability=0.2)
    metrics = lambda p: {"n_rows": float(p.predictions.shape[0])}
    outs = []
    for cls in (T.Trainer, Recording):
        kw = {"sift_args": SiftArguments(keep=0.25)} if cls is Recording else {}
        tr = cls(model=micro_model(tok), args=targs(tmp_path, per_device_eval_batch_size=8), eval_dataset=data,
                 data_collator=coll, compute_metrics=metrics, **kw)
        torch.manual_seed(1)
        outs.append(tr.evaluate())
        if cls is Recording:
            assert tr.calls == [] and torch.equal(tr.sift_selector.generator.get_state(),
                                                  Selector(tr.sift_cfg, seed=0).generator.get_state())
    a, b = outs
    assert a["eval_loss"] == b["eval_loss"] and a["eval_n_rows"] == b["eval_n_rows"] == 32


def premasked(tok, rows):
    """Rows masked once up front (80/10/10, seeded): a deterministic dataset for DataCollatorForTokenClassification."""
    torch.manual_seed(0)
    b = T.DataCollatorForLanguageModeling(tok, mlm_probability=0.2)(rows)
    return [{"input_ids": b["input_ids"][i, :len(r["input_ids"])].tolist(),
             "token_type_ids": r["token_type_ids"], "labels": b["labels"][i, :len(r["input_ids"])].tolist()}
            for i, r in enumerate(rows)]


def _resume_run(tok, data, collator, out, save_steps, **kw):
    sift = SiftArguments(selection="entropy", keep=0.5, exit_layer="1", score_tokens=2, interrupt_every=2)
    args = targs(out, max_steps=6, gradient_accumulation_steps=2, save_strategy="steps", save_steps=save_steps)
    tr = SiftTrainer(model=micro_model(tok), args=args, train_dataset=data, data_collator=collator, sift_args=sift)
    tr.train(**kw)
    return tr, {h["step"]: h["loss"] for h in tr.state.log_history if "loss" in h}


@pytest.mark.parametrize("where", ["mid-epoch", "epoch-boundary"])
def test_resume_bitwise(tok, lines, tmp_path, where):
    """resume_from_checkpoint restores the selector (RNG); the resumed losses are bitwise the uninterrupted ones.

    Mid-epoch the data must be deterministic (pre-masked): the Trainer restores the global RNG only after
    the first resumed window has been collated (and accelerate collates one batch ahead), so a collator that
    masks on the fly differs there under the stock Trainer too. At an epoch boundary it is exact either way.
    """
    rows = examples(tok, lines)
    if where == "mid-epoch":  # 8 batches an epoch, GA 2: step 3 is mid-epoch
        data, coll, step = premasked(tok, rows), T.DataCollatorForTokenClassification(tok), 3
    else:
        data, coll, step = rows, T.DataCollatorForLanguageModeling(tok, mlm_probability=0.2), 4
    full, losses = _resume_run(tok, data, coll, tmp_path / "a", step)
    ckpt = tmp_path / "a" / "out" / f"checkpoint-{step}"
    state = safe_load(ckpt / STATE_FILE.format(0))  # what SiftTrainer itself loads with
    fresh = Selector(full.sift_cfg, seed=0).generator.get_state()
    assert not torch.equal(state["selector"]["generator"], fresh)  # the RNG moved: restoring it matters
    _, resumed = _resume_run(tok, data, coll, tmp_path / "b", step, resume_from_checkpoint=str(ckpt))
    after = range(step + 1, 7)
    assert [resumed[s] for s in after] == [losses[s] for s in after]
    if where == "mid-epoch":
        (ckpt / STATE_FILE.format(0)).unlink()
        with pytest.raises(ConfigError, match="no SIFT selector state"):
            _resume_run(tok, data, coll, tmp_path / "c", step, resume_from_checkpoint=str(ckpt))


def _one_line(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_misuse_one_line_at_startup(tok, lines, tmp_path):
    datasets = pytest.importorskip("datasets")
    data = examples(tok, lines, n=16)
    coll = T.DataCollatorForLanguageModeling(tok)
    with pytest.raises(ConfigError) as e:
        SiftArguments(keep=1.5)
    _one_line(e, "keep must be in (0, 1]")
    with pytest.raises(ConfigError) as e:
        SiftTrainer(model=micro_model(tok), args=targs(tmp_path), train_dataset=data, data_collator=coll,
                    sift_args=SiftArguments(exit_layer="3"))
    _one_line(e, "--exit_layer 3", "2 layers")
    cls_model = T.BertForSequenceClassification(micro_model(tok).config)
    with pytest.raises(ConfigError) as e:
        SiftTrainer(model=cls_model, args=targs(tmp_path), train_dataset=data, data_collator=coll)
    _one_line(e, "BertForSequenceClassification", "masked-LM head")
    with pytest.raises(ConfigError) as e:
        SiftTrainer(model=micro_model(tok), args=targs(tmp_path), train_dataset=data,
                    data_collator=T.DataCollatorForLanguageModeling(tok, mlm=False))
    _one_line(e, "mlm=False")
    # a dataset without labels and a collator that makes none
    ds = datasets.Dataset.from_list([{"input_ids": r["input_ids"]} for r in data])
    with pytest.raises(ConfigError) as e:
        SiftTrainer(model=micro_model(tok), args=targs(tmp_path), train_dataset=ds,
                    data_collator=T.DataCollatorWithPadding(tok))
    _one_line(e, "'labels' column")

    # pre-masked labels, and a model whose forward takes no labels (SIFT computes the loss): the Trainer's
    # remove_unused_columns would drop them
    class NoLabelsMLM(T.BertForMaskedLM):
        def forward(self, input_ids=None, attention_mask=None):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask)

    pre = datasets.Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in data])
    with pytest.raises(ConfigError) as e:
        SiftTrainer(model=NoLabelsMLM(micro_model(tok).config), args=targs(tmp_path), train_dataset=pre,
                    data_collator=T.DataCollatorWithPadding(tok))
    _one_line(e, "remove_unused_columns", "'labels'")
    # a list dataset cannot be inspected up front: the first batch reports it, before any backward
    tr = SiftTrainer(model=micro_model(tok), args=targs(tmp_path), train_dataset=data,
                     data_collator=T.DataCollatorWithPadding(tok))
    with pytest.raises(ConfigError) as e:
        tr.train()
    _one_line(e, "'labels'")
    assert tr.state.global_step == 0


def test_drop_in_refusals_are_one_line_at_parse_time():
    """What the Trainer drop-in cannot do is refused where the flags are parsed (HfArgumentParser), one line."""
    parser = T.HfArgumentParser((SiftArguments,))
    for flags, needles in ((["--selection_scope", "global"], ("selection_scope 'global'", "SiftTrainer")),
                           (["--selection_rule", "sample"], ("selection_rule 'sample'", "SiftTrainer")),
                           (["--adaptive_keep", "noise"], ("adaptive_keep is not supported by SiftTrainer",))):
        with pytest.raises(ConfigError) as e:
            parser.parse_args_into_dataclasses(flags)
        _one_line(e, *needles)
    (ok,) = parser.parse_args_into_dataclasses(["--selection_rule", "topk", "--adaptive_keep", "off"])
    assert ok.sift_config(8).selection_rule == "topk"


def test_keep_one_is_the_plain_trainer(tok, lines, tmp_path):
    """keep = 1: the same batches and losses as transformers.Trainer (GA 1, where its per-batch mean is exact)."""
    runs = []
    for cls in (T.Trainer, SiftTrainer):
        kw = {"sift_args": SiftArguments(keep=1.0)} if cls is SiftTrainer else {}
        torch.manual_seed(0)
        tr = cls(model=micro_model(tok), args=targs(tmp_path, max_steps=3), train_dataset=examples(tok, lines),
                 data_collator=T.DataCollatorForLanguageModeling(tok), **kw)
        tr.train()
        runs.append([h["loss"] for h in tr.state.log_history if "loss" in h])
    torch.testing.assert_close(torch.tensor(runs[0]), torch.tensor(runs[1]), rtol=1e-6, atol=1e-6)


def test_sift_arguments_parse_beside_training_arguments(tmp_path):
    parser = T.HfArgumentParser((T.TrainingArguments, SiftArguments))
    targs_, sift = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--keep", "0.25", "--exit_layer", "auto", "--selection", "loss",
         "--selection_warmup_steps", "2", "--anneal_until", "10", "--interrupt_every", "5", "--score_tokens", "3"])
    cfg = sift.sift_config(32)
    assert isinstance(cfg, SiftConfig) and cfg.keep == 0.25 and cfg.exit_layer == "auto" and cfg.backprop_size == 8
    assert (cfg.selection, cfg.selection_warmup_steps, cfg.anneal_until, cfg.interrupt_every, cfg.score_tokens) == \
        ("loss", 2, 10, 5, 3)


@pytest.mark.parametrize("rule,power", [("sqrt", 0.5), ("none", 0.0), ("fourth-root", 0.25),
                                        ("three-eighths", 0.375), ("linear", 1.0)])
def test_lr_batch_scale_scales_the_selection_steps_update(tok, lines, tmp_path, rule, power):
    """The LR each optimizer step really uses: the linear schedule's 1e-3 × (1 − i/4), × keep^p while selecting
    (select_until 0.5: steps 0 and 1 of 4), the schedule's own after; the schedule's LR is back after each step."""
    seen, after = [], []

    class Spy(SiftTrainer):
        def create_optimizer(self, model=None):
            opt = super().create_optimizer(model)
            inner = getattr(opt, "optimizer", opt)
            inner.register_step_pre_hook(lambda o, *_: seen.append(o.param_groups[0]["lr"]))
            inner.register_step_post_hook(lambda o, *_: after.append(o.param_groups[0]["lr"]))
            return opt

    sift = SiftArguments(selection="entropy", keep=0.25, select_until=0.5, lr_batch_scale=rule)
    tr = Spy(model=micro_model(tok), args=targs(tmp_path, max_steps=4, per_device_train_batch_size=8),
             train_dataset=examples(tok, lines), data_collator=T.DataCollatorForLanguageModeling(tok), sift_args=sift)
    tr.train()
    schedule = [1e-3 * (1 - i / 4) for i in range(4)]
    want = [lr * (0.25 ** power if i < 2 else 1.0) for i, lr in enumerate(schedule)]
    assert seen == pytest.approx(want, rel=1e-12) and after == pytest.approx(schedule, rel=1e-12)
    kept = [h["sift/kept_fraction"] for h in tr.state.log_history if "sift/kept_fraction" in h]
    assert kept == [0.25, 0.25, 1.0, 1.0]


def test_lr_batch_scale_bad_value_is_one_line():
    for bad in ("cube", "1.5"):
        with pytest.raises(ConfigError, match=r"lr_batch_scale must be one of none, fourth-root, three-eighths, sqrt, "
                           r"linear or a power in \[0, 1\]; got '"):
            SiftArguments(lr_batch_scale=bad)
    assert SiftArguments(lr_batch_scale="0.3125").lr_batch_scale == "0.3125"  # the power, as the CLI's flag


def test_lr_batch_scale_hooks_an_optimizer_once_and_skips_a_placeholder(tok, lines, tmp_path, monkeypatch, caplog):
    """Two trainers sharing one optimizer (and a repeated create_optimizer) scale its step once, not twice; a
    placeholder that is not a torch optimizer (DeepSpeed's optimizer from its config) gets a warning, not a crash."""
    import logging
    from types import SimpleNamespace

    model = micro_model(tok)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kw = dict(args=targs(tmp_path), train_dataset=examples(tok, lines),
              data_collator=T.DataCollatorForLanguageModeling(tok),
              sift_args=SiftArguments(keep=0.25, lr_batch_scale="sqrt"))
    a, b = (SiftTrainer(model=model, optimizers=(opt, None), **kw) for _ in range(2))
    a.create_optimizer(), b.create_optimizer(), a.create_optimizer()
    a.sift_step_kept_fraction = b.sift_step_kept_fraction = 0.25
    seen = []
    opt.register_step_pre_hook(lambda o, *_: seen.append(o.param_groups[0]["lr"]))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert seen == [pytest.approx(0.1 * 0.25 ** 0.5, rel=1e-12)] and opt.param_groups[0]["lr"] == 0.1
    monkeypatch.setattr(T.Trainer, "create_optimizer", lambda self, model=None: SimpleNamespace(param_groups=[]))
    with caplog.at_level(logging.WARNING, logger="sift_fast.hf"):
        SiftTrainer(model=model, **kw).create_optimizer()
    assert "lr_batch_scale sqrt is not applied" in caplog.text and "SimpleNamespace" in caplog.text
