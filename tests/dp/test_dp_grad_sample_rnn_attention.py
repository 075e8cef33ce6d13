"""Recurrent and attention layers, used as they are: per-sample gradients against a loop."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from veil.dp import PrivacyEngine, UnsupportedModuleError
from veil.dp.grad_sample import GradSampleModule


def _reference(model, x, y, bdim):
    grads = {}
    for i in range(len(y)):
        model.zero_grad()
        xi = x.narrow(bdim, i, 1)
        nn.functional.cross_entropy(model(xi), y[i:i + 1]).backward()
        for n, p in model.named_parameters():
            if p.requires_grad:
                grads.setdefault(n, []).append(p.grad.clone())
    model.zero_grad(set_to_none=True)
    return {n: torch.stack(g) for n, g in grads.items()}


def _check(model, x, y, bdim, **gsm_kwargs):
    ref = _reference(model, x, y, bdim)
    gsm = GradSampleModule(model, **gsm_kwargs)
    nn.functional.cross_entropy(gsm(x), y).backward()
    got = gsm.per_sample_gradients()
    assert set(got) == set(ref)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], atol=1e-5, rtol=1e-4)
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in ref.values()))
    clip = float(norms.median())
    sums, _ = gsm.clipped_sum(clip)
    c = (clip / (norms + 1e-6)).clamp(max=1)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(sums[p], torch.einsum("b,b...->...", c, ref[n]),
                                       atol=1e-5, rtol=1e-4)
    gsm.detach()
    assert "forward" not in vars(model)


class RNNNet(nn.Module):
    def __init__(self, rnn: nn.RNNBase, init: bool):
        super().__init__()
        self.rnn, self.init = rnn, init
        self.head = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 3)

    def forward(self, x):
        bf = self.rnn.batch_first
        if self.init:
            layers = self.rnn.num_layers * (2 if self.rnn.bidirectional else 1)
            h = torch.full((layers, x.shape[0 if bf else 1], self.rnn.hidden_size), 0.3)
            out, _ = self.rnn(x, (h, -h) if isinstance(self.rnn, nn.LSTM) else h)
        else:
            out, _ = self.rnn(x)
        return self.head(out.mean(1 if bf else 0))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("layers,bidirectional,init", [(2, True, False), (1, False, True),
                                                        (1, True, True)])
def test_recurrent_layers_are_exact(cls, batch_first, layers, bidirectional, init):
    torch.manual_seed(0)
    kw = {"nonlinearity": "relu"} if cls is nn.RNN and init else {}
    rnn = cls(4, 5, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
              dropout=0.0, **kw)
    x = torch.randn(6, 7, 4) if batch_first else torch.randn(7, 6, 4)
    _check(RNNNet(rnn, init), x, torch.arange(6) % 3, 0 if batch_first else 1)


class AttnNet(nn.Module):
    def __init__(self, attn: nn.MultiheadAttention, mode: str):
        super().__init__()
        self.attn, self.mode = attn, mode
        self.head = nn.Linear(attn.embed_dim, 3)

    def forward(self, x):
        bf = self.attn.batch_first
        n, b = (x.shape[1], x.shape[0]) if bf else (x.shape[0], x.shape[1])
        kw = {}
        if "causal" in self.mode:
            kw = dict(attn_mask=nn.Transformer.generate_square_subsequent_mask(n),
                      is_causal=True, need_weights=False)
        if "bool-mask" in self.mode:
            kw["attn_mask"] = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
        if "padding" in self.mode:
            kpm = torch.zeros(b, n, dtype=torch.bool)
            kpm[:, -1] = True
            kw["key_padding_mask"] = kpm
        if "no-weights" in self.mode:
            kw["need_weights"] = False
        if "cross" in self.mode:
            out, _ = self.attn(x, x * 0.5 + 1, x * 2 - 1, **kw)
        else:
            out, _ = self.attn(x, x, x, **kw)
        return self.head(out.mean(1 if bf else 0))


@pytest.mark.parametrize("kwargs,mode,batch_first", [
    (dict(add_bias_kv=True), "padding", True),
    (dict(), "causal", False),
    (dict(add_zero_attn=True), "bool-mask no-weights", True),
    (dict(add_bias_kv=True), "cross padding no-weights", True),
    (dict(bias=False), "cross", False),
])
def test_multihead_attention_is_exact(kwargs, mode, batch_first):
    torch.manual_seed(1)
    model = AttnNet(nn.MultiheadAttention(8, 2, batch_first=batch_first, **kwargs), mode)
    x = torch.randn(5, 4, 8) if batch_first else torch.randn(4, 5, 8)
    _check(model, x, torch.arange(5) % 3, 0 if batch_first else 1)


def test_attention_with_separate_key_value_sizes_is_exact():
    torch.manual_seed(2)

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.attn(x, x[..., :6] * 2, x[..., 3:])[0].mean(1))

    _check(Cross(), torch.randn(5, 4, 8), torch.arange(5) % 3, 0)


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_is_exact(batch_first):
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            n = x.shape[1] if batch_first else x.shape[0]
            mask = nn.Transformer.generate_square_subsequent_mask(n)
            return self.head(self.enc(x, mask=mask, is_causal=True).mean(1 if batch_first else 0))

    x = torch.randn(5, 4, 8) if batch_first else torch.randn(4, 5, 8)
    _check(Encoder(), x, torch.arange(5) % 3, 0 if batch_first else 1, batch_first=batch_first)


def test_unsupported_layer_is_refused_at_make_private_naming_it():
    model = nn.Sequential(nn.Linear(3, 3), nn.LSTM(3, 4, proj_size=2))
    data = DataLoader(TensorDataset(torch.randn(10, 2, 3)), batch_size=2)
    engine = PrivacyEngine()
    with pytest.raises(UnsupportedModuleError, match=r"layer 1 \(LSTM"):
        engine.make_private(module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                            data_loader=data, noise_multiplier=1.0, max_grad_norm=1.0)


def test_native_forward_outside_dp_and_packed_sequences_refused():
    torch.manual_seed(4)
    lstm = nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)
    want = lstm(x)[0]
    gsm = GradSampleModule(nn.Sequential(lstm))
    with torch.no_grad():
        torch.testing.assert_close(gsm(x)[0], want)
    torch.testing.assert_close(gsm(x)[0], want)  # the DP re-run computes the same output
    packed = nn.utils.rnn.pack_padded_sequence(x, [5, 3], batch_first=True)
    with pytest.raises(NotImplementedError, match="PackedSequence"):
        gsm(packed)
