"""Per-sample gradients of every supported layer against a micro-batch loop."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from veil.dp.grad_sample import GradSampleModule


class Scale(nn.Module):  # a custom layer: handled by the torch.func fallback
    def __init__(self, c):
        super().__init__()
        self.w = nn.Parameter(torch.randn(c))

    def forward(self, x):
        return x * self.w.view(1, -1, *([1] * (x.dim() - 2)))


class Shared(nn.Module):  # the same Linear used twice in one forward
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.lin(torch.tanh(self.lin(x)))))


class Tied(nn.Module):  # one weight in two modules (embedding and output layer tied)
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.mid = nn.Linear(4, 4)
        self.out = nn.Linear(4, 7, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x):
        return self.out(torch.tanh(self.mid(self.emb(x))).mean(1))


class Mixed(nn.Module):  # a module with its own parameter and a trainable child
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.randn(3))
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x) * self.p


def _models():
    torch.manual_seed(0)
    return {
        "linear": (nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)),
                   torch.randn(7, 6)),
        "linear-seq-ghost": (nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Flatten(),
                                           nn.Linear(3 * 30, 3)), torch.randn(5, 3, 40)),
        "linear-seq-materialise": (nn.Sequential(nn.Linear(3, 2), nn.Flatten(),
                                                 nn.Linear(20, 3)), torch.randn(5, 10, 3)),
        "conv2d": (nn.Sequential(
            nn.Conv2d(4, 6, 3, padding=(1, 2), stride=(2, 1), dilation=(1, 2), groups=2),
            nn.ReLU(), nn.Conv2d(6, 3, 2, bias=False), nn.Flatten(), nn.LazyLinear(3)),
            torch.randn(6, 4, 9, 8)),
        "conv2d-strided": (nn.Sequential(
            nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 2)), nn.ReLU(),
            nn.Conv2d(5, 4, 3, stride=2, bias=False), nn.Flatten(), nn.LazyLinear(3)),
            torch.randn(4, 3, 11, 9)),
        "conv-ghost-norm": (nn.Sequential(
            nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 2, groups=2), nn.Flatten(),
            nn.LazyLinear(3)), torch.randn(5, 3, 5, 5)),
        "conv1d-ghost-norm": (nn.Sequential(nn.Conv1d(8, 16, 3), nn.Flatten(), nn.LazyLinear(3)),
                              torch.randn(5, 8, 5)),
        "conv1d": (nn.Sequential(nn.Conv1d(3, 4, 3, padding=1, stride=2), nn.Flatten(),
                                 nn.LazyLinear(3)), torch.randn(5, 3, 11)),
        "groupnorm-layernorm-custom": (nn.Sequential(
            nn.Conv2d(2, 6, 3), nn.GroupNorm(3, 6), Scale(6), nn.Flatten(), nn.LazyLinear(5),
            nn.LayerNorm(5), nn.Linear(5, 3)), torch.randn(4, 2, 5, 5)),
        "embedding-fallback": (nn.Sequential(nn.Embedding(11, 4), nn.Flatten(), nn.Linear(12, 3)),
                               torch.randint(0, 11, (6, 3))),
        "reflect-conv-fallback": (nn.Sequential(nn.Conv2d(2, 3, 3, padding=1,
                                                          padding_mode="reflect"),
                                                nn.Flatten(), nn.LazyLinear(3)),
                                  torch.randn(4, 2, 5, 5)),
        "shared-weights": (Shared(), torch.randn(5, 5)),
        "tied-across-modules": (Tied(), torch.randint(0, 7, (5, 3))),
        "own-params-and-children": (nn.Sequential(Mixed(), nn.Linear(3, 3)), torch.randn(6, 3)),
    }


def _reference(model, x, y):
    grads = {}
    for i in range(len(x)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in model.named_parameters():
            if p.requires_grad:
                grads.setdefault(n, []).append(p.grad.clone())
    model.zero_grad(set_to_none=True)
    return {n: torch.stack(g) for n, g in grads.items()}


@pytest.mark.parametrize("name", list(_models()))
def test_per_sample_gradients_equal_micro_batch_loop(name):
    model, x = _models()[name]
    model(x)  # materialise lazy layers
    y = torch.arange(len(x)) % 3
    ref = _reference(model, x, y)
    gsm = GradSampleModule(model)
    nn.functional.cross_entropy(gsm(x), y).backward()
    got = gsm.per_sample_gradients()
    assert set(got) == set(ref)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], atol=1e-5, rtol=1e-4)
    # clipped sum: Σ_i min(1, C/‖g_i‖) g_i over the whole model
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in ref.values()))
    for clip in (1e-3, float(norms.median()), 1e3):
        sums, stats = gsm.clipped_sum(clip)
        c = (clip / (norms + 1e-6)).clamp(max=1)
        for n, p in model.named_parameters():
            if not p.requires_grad:
                continue
            torch.testing.assert_close(sums[p], torch.einsum("b,b...->...", c, ref[n]),
                                       atol=1e-5, rtol=1e-4)
        assert stats["batch"] == len(x)
    gsm.detach()
    assert "forward" not in vars(model)


def test_clipped_per_sample_norms_are_bounded():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2))
    gsm = GradSampleModule(model)
    x = torch.randn(32, 10) * 50
    nn.functional.cross_entropy(gsm(x), torch.randint(0, 2, (32,))).backward()
    per = gsm.per_sample_gradients()
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per.values()))
    clip = 0.1
    c = (clip / (norms + 1e-6)).clamp(max=1)
    assert torch.all(norms * c <= clip + 1e-6)
    sums, stats = gsm.clipped_sum(clip)
    total = torch.sqrt(sum(s.pow(2).sum() for s in sums.values()))
    assert total <= clip * 32 + 1e-4 and stats["clipped"] > 0.5


def test_sum_reduction_and_frozen_layers():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    ref = _reference(model, x, y)
    gsm = GradSampleModule(model, loss_reduction="sum")
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    got = gsm.per_sample_gradients()
    assert "0.weight" not in got
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], atol=1e-5, rtol=1e-4)


def test_bad_inputs_are_refused():
    gsm = GradSampleModule(nn.Linear(3, 1))
    with pytest.raises(ValueError):
        GradSampleModule(nn.Linear(3, 1), loss_reduction="max")
    gsm(torch.randn(4, 3)).sum().backward()
    with pytest.raises(ValueError):
        gsm.clipped_sum(0.0)
    gsm.clear()
    (gsm(torch.randn(4, 3)).sum() + gsm(torch.randn(5, 3)).sum()).backward()
    with pytest.raises(RuntimeError, match="different batch sizes"):
        gsm.clipped_sum(1.0)
    gsm.clear()
    gsm(torch.full((2, 3), float("nan"))).sum().backward()
    with pytest.raises(FloatingPointError):
        gsm.clipped_sum(1.0)


def test_eval_mode_and_no_grad_capture_nothing():
    gsm = GradSampleModule(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)))
    with torch.no_grad():
        gsm(torch.randn(4, 3))
    gsm.eval()
    gsm(torch.randn(4, 3)).sum().backward()
    assert not gsm.has_records


def test_wrapped_model_still_gives_ordinary_gradients_outside_dp():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(),
                          nn.Linear(64, 3))
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    gsm = GradSampleModule(model)
    for run in (lambda: model(x), lambda: gsm.eval()(x)):  # raw module, or eval mode
        nn.functional.cross_entropy(run(), y).backward()
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.grad, ref[n])
        model.zero_grad(set_to_none=True)
        assert not gsm.has_records
    gsm.train()
    nn.functional.cross_entropy(gsm(x), y).backward()
    assert gsm.has_records and model[0].weight.grad is None


@given(b=st.integers(1, 6), t=st.integers(1, 5), d=st.integers(1, 7), o=st.integers(1, 7),
       bias=st.booleans(), clip=st.floats(1e-3, 10.0))
def test_linear_ghost_clipping_matches_materialised(b, t, d, o, bias, clip):
    torch.manual_seed(b * 1000 + t * 100 + d * 10 + o)
    layer = nn.Linear(d, o, bias=bias)
    gsm = GradSampleModule(layer, loss_reduction="sum")
    x = torch.randn(b, t, d) if t > 1 else torch.randn(b, d)
    gsm(x).pow(2).sum().backward()
    per = gsm.per_sample_gradients()
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per.values()))
    c = (clip / (norms + 1e-6)).clamp(max=1)
    sums, _ = gsm.clipped_sum(clip)
    for name, p in layer.named_parameters():
        torch.testing.assert_close(sums[p], torch.einsum("b,b...->...", c, per[name]),
                                   atol=1e-4, rtol=1e-4)


def test_tied_weights_give_the_exact_gradient_and_norm():
    # σ = 0 and no clipping: the clipped sum is the ordinary batch gradient; the per-sample
    # norm is ‖g_emb + g_out‖, not sqrt(‖g_emb‖² + ‖g_out‖²).
    torch.manual_seed(4)
    model, x = Tied(), torch.randint(0, 7, (6, 3))
    y = torch.arange(6) % 7
    nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    gsm = GradSampleModule(model, loss_reduction="sum")
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    sums, _ = gsm.clipped_sum(1e9)
    for n, p in model.named_parameters():
        torch.testing.assert_close(sums[p], want[n], atol=1e-5, rtol=1e-5)
