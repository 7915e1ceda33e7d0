"""The adapter's early exit and masked-row training forward against the full HF model."""

from types import SimpleNamespace

import pytest
import torch

from sift_fast.config import ModelConfig
from sift_fast.models.hf import build_model


def tiny(arch="bert", model_class="mlm", layers=3):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, model_class=model_class, num_layers=layers, hidden_size=32, num_heads=2,
                      intermediate_size=64, dropout=0.1)
    return build_model(cfg, vocab_size=97, seq_len=16, pad_id=1)


def batch(b=3, s=16, v=97):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, v, (b, s), generator=g)
    am = torch.ones(b, s, dtype=torch.long)
    am[1, 11:] = 0  # padding
    return SimpleNamespace(input_ids=ids, attention_mask=am)


@pytest.mark.parametrize("arch,model_class", [("bert", "mlm"), ("bert", "pretraining"), ("roberta", "mlm")])
def test_exit_equals_full_model_hidden_state_then_head(arch, model_class):
    model = tiny(arch, model_class)
    b = batch()
    ref_model = model.hf.eval()
    with torch.no_grad():
        out = ref_model(input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True)
    model.train()  # exit_hidden must switch dropout off by itself and restore the flags
    idx = torch.tensor([0, 5, 17, 40, 47])
    for k in range(1, model.num_layers + 1):
        h = model.exit_hidden(b, k)
        assert torch.equal(h, out.hidden_states[k])
        rows = model.exit_rows(b, k, idx)
        with torch.no_grad():
            head = ref_model.cls.predictions.transform if arch == "bert" else None
            if head is None:
                lm = ref_model.lm_head
                ref_rows = lm.layer_norm(torch.nn.functional.gelu(lm.dense(out.hidden_states[k].reshape(-1, 32)[idx])))
            else:
                ref_rows = head(out.hidden_states[k].reshape(-1, 32)[idx])
        assert torch.equal(rows, ref_rows)
    assert all(m.training for m in model.modules())


def test_masked_row_forward_equals_hf_mlm_loss():
    model = tiny()
    model.eval()
    b = batch()
    labels = torch.full((3, 16), -100)
    labels[0, 3], labels[2, 7], labels[2, 9] = 10, 20, 30
    with torch.no_grad():
        hf_loss = model.hf(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=labels).loss
        idx = (labels.reshape(-1) != -100).nonzero().squeeze(1)
        out = model(b.input_ids, b.attention_mask, idx, labels.reshape(-1)[idx])
    torch.testing.assert_close(out.loss, hf_loss, rtol=1e-6, atol=1e-6)
    assert out.num_rows == 3


def test_exit_layer_range_checked():
    model = tiny(layers=2)
    with pytest.raises(ValueError):
        model.exit_hidden(batch(), 3)
    with pytest.raises(ValueError):
        model.exit_hidden(batch(), 0)


def test_unpadded_batches_run_maskless_with_identical_results():
    import numpy as np

    from sift_fast.data import make_batch

    ids = np.random.default_rng(0).integers(5, 97, size=(4, 16))
    ids[2, 12:] = 1  # pad id 1: row 2 is padded
    labels = np.full((4, 16), -100)
    labels[:, 3] = 7
    b = make_batch(ids, labels, np.arange(4), pad_id=1)
    assert b.has_padding and b.model_attention_mask is not None
    sub = b.select([0, 3])
    assert not sub.has_padding and sub.model_attention_mask is None
    assert b.select([3, 2]).row_padded.tolist() == [False, True]
    model = tiny().eval()
    with torch.no_grad():
        a = model(sub.input_ids, None, sub.masked_index, sub.masked_targets).loss
        m = model(sub.input_ids, sub.attention_mask, sub.masked_index, sub.masked_targets).loss
    assert torch.equal(a, m)
