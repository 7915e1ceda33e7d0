"""The Megatron drop-in: exit scores of a megatron-core BertModel and the wrapped forward_step.

megatron-core runs here on CPU with two test-only patches of its CUDA-only internals (the attention
scratch buffer is allocated on the current CUDA device, and attention dropout forks a CUDA RNG
tracker); the model math is megatron-core's own.
"""

from __future__ import annotations

import contextlib
import socket
from functools import partial

import pytest
import torch

pytest.importorskip("megatron.core", reason="megatron-core is a dev dependency (pip install -e .[dev])")

from sift_fast.config import build_config  # noqa: E402
from sift_fast.errors import ConfigError  # noqa: E402
from sift_fast.megatron import mcore_bert_exit_scores, sift_forward_step  # noqa: E402

C, S, V, LAYERS = 8, 16, 101, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mcore_model():
    import torch.distributed as dist
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core import utils as mcore_utils
    from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec
    from megatron.core.models.bert.bert_model import BertModel
    from megatron.core.transformer.transformer_config import TransformerConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mcore_utils.GlobalMemoryBuffer, "get_tensor",
                   lambda self, shape, dtype, name, mem_alloc_context=None: torch.empty(shape, dtype=dtype))
        mp.setattr(tensor_parallel.random.CudaRNGStatesTracker, "fork",
                   lambda self, name="model-parallel-rng": contextlib.nullcontext())
        owns_pg = not dist.is_initialized()
        if owns_pg:
            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
        parallel_state.initialize_model_parallel(1, 1)
        torch.manual_seed(0)
        cfg = TransformerConfig(num_layers=LAYERS, hidden_size=32, num_attention_heads=4,
                                use_cpu_initialization=True, hidden_dropout=0.1, attention_dropout=0.1)
        models = {}
        for name, tied, types in (("untied", False, 2), ("tied", True, 2), ("no-types", True, 0)):
            models[name] = BertModel(config=cfg, num_tokentypes=types, transformer_layer_spec=bert_layer_local_spec,
                                     vocab_size=V, max_sequence_length=S, add_binary_head=False,
                                     share_embeddings_and_output_weights=tied)
            with torch.no_grad():  # output bias is zero-initialized; make it count
                models[name].output_layer.bias.normal_(0, 0.5)
        # a copy of "tied" for the bf16 test (Float16Module converts its module in place)
        models["tied-copy"] = BertModel(config=cfg, num_tokentypes=2, transformer_layer_spec=bert_layer_local_spec,
                                        vocab_size=V, max_sequence_length=S, add_binary_head=False,
                                        share_embeddings_and_output_weights=True)
        models["tied-copy"].load_state_dict(models["tied"].state_dict())
        try:
            yield models
        finally:
            parallel_state.destroy_model_parallel()
            if owns_pg:
                dist.destroy_process_group()


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(5, V, (C, S), generator=g)
    loss_mask = (torch.rand(C, S, generator=g) < 0.25).long()
    loss_mask[2] = 0  # a sequence with no masked token
    loss_mask[:, 0] = 0
    padding = torch.ones(C, S, dtype=torch.long)
    padding[5, 11:] = 0  # a padded sequence
    loss_mask[5, 11:] = 0
    labels = torch.where(loss_mask.bool(), torch.randint(5, V, (C, S), generator=g), -1)  # Megatron: -1 = none
    types = torch.zeros(C, S, dtype=torch.long)
    types[:, S // 2:] = 1
    return {"text": text, "types": types, "labels": labels, "loss_mask": loss_mask, "padding_mask": padding,
            "is_random": torch.zeros(C, dtype=torch.long)}


def _types(model, batch):
    return batch["types"] if model.embedding.tokentype_embeddings is not None else None


def _manual_exit_fp64(model, batch, k: int, criterion: str) -> torch.Tensor:
    """Reference: the layers by hand, full [tokens, vocab] logits in fp64, brute-force per-sample mean."""
    model.eval()
    tok = batch["text"]
    with torch.no_grad():
        h = model.embedding(input_ids=tok, position_ids=model.bert_position_ids(tok),
                            tokentype_ids=_types(model, batch))
        ext = model.bert_extended_attention_mask(batch["padding_mask"])
        for layer in model.encoder.layers[:k]:
            h = layer(hidden_states=h, attention_mask=ext)[0]
        h = model.lm_head(hidden_states=model.encoder.final_layernorm(h)).double()  # [s, b, h]
        w = model.output_layer.weight  # None when tied to the word embedding
        w = (model.embedding.word_embeddings.weight if w is None else w).double()
        logits = h @ w.T + model.output_layer.bias.double()
    model.train()
    out = torch.full((C,), float("-inf"), dtype=torch.float64)
    for b in range(C):
        pos = batch["loss_mask"][b].nonzero().flatten().tolist()
        if not pos:
            continue
        vals = []
        for p in pos:
            lp = torch.log_softmax(logits[p, b], -1)
            vals.append(-lp[batch["labels"][b, p]] if criterion == "loss" else -(lp.exp() * lp).sum())
        out[b] = torch.stack(vals).mean()
    return out


@pytest.fixture(params=["untied", "tied", "no-types"])
def model(request, mcore_model):
    return mcore_model[request.param]


@pytest.mark.parametrize("criterion", ["loss", "entropy"])
@pytest.mark.parametrize("k", [1, LAYERS])
def test_exit_scores_match_fp64_reference(model, k, criterion):
    mcore_model = model
    batch = _batch(1)
    got = mcore_bert_exit_scores(mcore_model, batch, k, criterion, "torch")
    want = _manual_exit_fp64(mcore_model, batch, k, criterion)
    assert torch.isinf(got[2]) and got[2] < 0  # no masked token
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[fin].double(), want[fin], rtol=1e-5, atol=1e-5)
    assert mcore_model.training  # training flags restored


def test_full_depth_loss_equals_the_models_own_forward(model):
    """At exit = L the loss score is the model's own per-token MLM loss averaged over loss_mask."""
    mcore_model = model
    batch = _batch(2)
    mcore_model.eval()
    with torch.no_grad():
        tok_loss, _ = mcore_model(batch["text"], batch["padding_mask"], tokentype_ids=_types(mcore_model, batch),
                                  lm_labels=batch["labels"].clamp(min=0))
    mcore_model.train()
    lm = batch["loss_mask"].float()
    want = (tok_loss * lm).sum(1) / lm.sum(1)
    got = mcore_bert_exit_scores(mcore_model, batch, LAYERS, "loss", "torch")
    keep = lm.sum(1) > 0
    torch.testing.assert_close(got[keep], want[keep].float(), rtol=1e-5, atol=1e-5)


def _megatron_style_forward_step(seen: list):
    """What pretrain_bert.py does: get_batch from the iterator, model(...), partial(loss_func, loss_mask)."""
    def loss_func(loss_mask, output_tensor):
        lm_loss_, _ = output_tensor
        lm = loss_mask.float()
        loss = (lm_loss_.float() * lm).sum() / lm.sum().clamp(min=1)
        return loss, {"lm loss": loss.detach()}

    def forward_step(data_iterator, model):
        data = next(data_iterator)
        seen.append(data)
        out = model(data["text"], data["padding_mask"], tokentype_ids=data["types"], lm_labels=data["labels"])
        return out, partial(loss_func, data["loss_mask"])

    return forward_step


def test_wrapped_forward_step_trains_on_the_top_k(mcore_model):
    mcore_model = mcore_model["tied"]
    seen: list = []
    inner = _megatron_style_forward_step(seen)
    fs = sift_forward_step(inner, {"preset": "micro", "candidates": C, "keep": 0.5, "exit_layer": 1,
                                   "selection": "entropy", "backend": "torch", "seed": 3,
                                   "select_until": 1.0})
    batch = _batch(3)
    torch.manual_seed(0)
    mcore_model.zero_grad()
    out, loss_fn = fs(iter([batch]), mcore_model)
    loss, _ = loss_fn(out)
    loss.backward()
    grads = [p.grad.clone() for p in mcore_model.parameters() if p.grad is not None]
    # the kept rows are the top half by the (brute-force) entropy scores, ascending
    ref = _manual_exit_fp64(mcore_model, batch, 1, "entropy")
    want = torch.sort(torch.topk(ref, C // 2).indices).values
    assert torch.equal(fs.stats["kept_index"], want) and fs.stats["kept"] == C // 2
    sub = seen[0]
    for key in ("text", "types", "labels", "loss_mask", "padding_mask", "is_random"):
        assert torch.equal(sub[key], batch[key][want]), key
    # same gradients as running the script's forward_step on that sub-batch directly
    torch.manual_seed(0)
    mcore_model.zero_grad()
    out2, loss_fn2 = inner(iter([sub]), mcore_model)
    loss_fn2(out2)[0].backward()
    grads2 = [p.grad for p in mcore_model.parameters() if p.grad is not None]
    assert len(grads) == len(grads2) and all(torch.equal(a, b) for a, b in zip(grads, grads2))
    assert fs.state_dict()["step"] == 1


class _DDPLike(torch.nn.Module):
    """A wrapper like Megatron's DDP / Float16Module: the model under ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_wrapped_forward_step_modes_and_errors(mcore_model, tmp_path):
    mcore_model = mcore_model["untied"]
    cfg_file = tmp_path / "sift.yaml"  # the same config file sift-pretrain --config reads
    cfg_file.write_text("preset: micro\ncandidates: 8\nkeep: 0.25\nselection: loss\nexit_layer: 2\nseed: 7\n")
    fs = sift_forward_step(lambda it, m: next(it), cfg_file)
    assert (fs.cfg.candidates, fs.cfg.backprop_size, fs.cfg.selection, fs.cfg.exit_layer) == (8, 2, "loss", 2)
    with pytest.raises(ConfigError, match="not found"):
        sift_forward_step(lambda it, m: next(it), tmp_path / "missing.yaml")
    seen: list = []
    base = {"preset": "micro", "candidates": C, "backend": "torch", "select_until": 1.0, "lr_batch_scale": "none"}
    fs = sift_forward_step(_megatron_style_forward_step(seen), {**base, "selection": "none"})
    fs(iter([_batch(4)]), _DDPLike(mcore_model))
    assert fs.stats["mode"] == "all" and seen[-1]["text"].shape[0] == C
    fs = sift_forward_step(_megatron_style_forward_step(seen), {**base, "keep": 0.5, "selection": "loss"})
    fs(iter([_batch(4)]), _DDPLike(mcore_model))  # scoring reaches through the wrapper
    want = torch.topk(_manual_exit_fp64(mcore_model, _batch(4), 1, "loss"), C // 2).indices
    assert torch.equal(fs.stats["kept_index"], torch.sort(want).values)
    # Megatron's evaluate(): model in eval mode -> every sample, no selection step taken
    mcore_model.eval()
    try:
        fs(iter([_batch(5)]), _DDPLike(mcore_model))
    finally:
        mcore_model.train()
    assert seen[-1]["text"].shape[0] == C and fs.step == 1
    for bad, msg in (({"score_tokens": 4}, "score_tokens"), ({"selection_scope": "global"}, "global"),
                     ({"exit_layer": "auto"}, "auto")):
        with pytest.raises(ConfigError, match=msg):
            sift_forward_step(lambda it, m: next(it), {**base, **bad})
    for cfg in ({**base, "lr_batch_scale": "sqrt"}, {**base, "lr_batch_scale": 0.3125},
                build_config({"lr_batch_scale": "linear"})):  # a whole Config too
        with pytest.warns(UserWarning, match="not applied by the Megatron drop-in"):
            sift_forward_step(lambda it, m: next(it), cfg)
    fs = sift_forward_step(_megatron_style_forward_step(seen), {**base, "selection": "random", "keep": 0.25})
    fs(iter([_batch(4)]), mcore_model)
    assert fs.stats["mode"] == "uniform" and fs.stats["scores"] is None and seen[-1]["text"].shape[0] == 2
    fs = sift_forward_step(_megatron_style_forward_step(seen), {**base, "candidates": 16})
    with pytest.raises(ConfigError, match="micro-batch-size"):
        fs(iter([_batch(4)]), mcore_model)
    fs = sift_forward_step(_megatron_style_forward_step(seen), base)
    bad = {k: v for k, v in _batch(4).items() if k != "loss_mask"}
    with pytest.raises(ConfigError, match="lacks loss_mask"):
        fs(iter([bad]), mcore_model)
    with pytest.raises(ConfigError, match="exit layer"):
        mcore_bert_exit_scores(mcore_model, _batch(4), LAYERS + 1, "loss", "torch")


def test_resume_from_state_dict_continues_the_same_selection(mcore_model):
    """Uniform (random) selection draws from the wrapper's RNG: a restored wrapper draws the same rows."""
    model = mcore_model["untied"]
    cfg = {"preset": "micro", "candidates": C, "keep": 0.5, "selection": "random", "backend": "torch", "seed": 11,
           "select_until": 1.0}
    a = sift_forward_step(lambda it, m: next(it), cfg)
    for i in range(3):
        a(iter([_batch(i)]), model)
    state = a.state_dict()
    want = [a(iter([_batch(10 + i)]), model)["text"] for i in range(2)]
    b = sift_forward_step(lambda it, m: next(it), cfg)
    b.load_state_dict(state)
    got = [b(iter([_batch(10 + i)]), model)["text"] for i in range(2)]
    assert b.step == a.step == 5
    assert all(torch.equal(x, y) for x, y in zip(want, got))
    fresh = sift_forward_step(lambda it, m: next(it), cfg)
    assert not torch.equal(fresh(iter([_batch(10)]), model)["text"], want[0])  # the state mattered


def test_bf16_model_under_float16module(mcore_model):
    """Megatron's bf16 training wraps the model in Float16Module; scores stay within bf16 error."""
    import dataclasses

    from megatron.core.transformer.module import Float16Module

    base = mcore_model["tied"]
    wrapped = Float16Module(dataclasses.replace(base.config, bf16=True), mcore_model["tied-copy"])
    assert next(wrapped.module.parameters()).dtype == torch.bfloat16
    batch = _batch(6)
    got = mcore_bert_exit_scores(wrapped, batch, 1, "entropy", "torch")
    want = _manual_exit_fp64(base, batch, 1, "entropy")
    fin = torch.isfinite(want)
    assert got.dtype == torch.float32 and torch.isinf(got[2])
    torch.testing.assert_close(got[fin].double(), want[fin], rtol=2e-2, atol=2e-2)
    # and the ranking the wrapper keeps agrees with fp64 on this batch
    assert set(torch.topk(got, C // 2).indices.tolist()) == set(torch.topk(want, C // 2).indices.tolist())


def test_select_until_follows_the_horizon_and_needs_one(mcore_model):
    """The default schedule under Megatron: micro-batch r selects while r / horizon < select_until, then
    passes every sample through with no scoring; without a horizon (and no Megatron args) one clear error."""
    model = mcore_model["tied"]
    seen: list = []
    cfg = {"preset": "micro", "candidates": C, "keep": 0.5, "selection": "loss", "backend": "torch",
           "select_until": 0.5}
    fs = sift_forward_step(_megatron_style_forward_step(seen), cfg, horizon=4)
    modes = []
    for i in range(4):
        fs(iter([_batch(i)]), model)
        modes.append((fs.stats["mode"], fs.stats["kept"], fs.stats["scores"] is None))
    assert modes == [("score", C // 2, False)] * 2 + [("all", C, True)] * 2
    assert [s["text"].shape[0] for s in seen] == [C // 2] * 2 + [C] * 2
    with pytest.raises(ConfigError, match="select_until 0.5 needs the run's length.*horizon="):
        sift_forward_step(lambda it, m: next(it), cfg)(iter([_batch(0)]), model)
    with pytest.raises(ConfigError, match="horizon must be"):
        sift_forward_step(lambda it, m: next(it), cfg, horizon=0)
