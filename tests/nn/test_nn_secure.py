"""Secure inference against its plaintext fixed-point twin and float PyTorch."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from tests.nn.nn_helpers import PoolNet, ResidualNet, randomize_batchnorm
from veil.comm.link import Link
from veil.nn import convert
from veil.nn.inference import secure_inference, serve
from veil.nn.twin import encode, twin_forward

# Each truncation (probabilistic, SecureML) may be off by one ulp = 2^-16 from the twin's floor;
# a few layers of weights amplify that a little.
TWIN_ATOL = 2e-3


def _check(model: nn.Module, shape: tuple[int, ...], batch: int = 3, seed: int = 0,
           **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    model = randomize_batchnorm(model, gen)
    x = torch.randn(batch, *shape, generator=gen)
    out, report = secure_inference(model, x, **kwargs)
    graph = convert(model, shape)
    twin = twin_forward(graph.with_argmax() if kwargs.get("argmax") else graph, x)
    assert out.shape == twin.shape
    assert (out - twin).abs().max() < TWIN_ATOL
    assert report.online_rounds > 0 and report.online_bytes > 0
    return out, twin


@pytest.mark.parametrize("layer, shape", [
    (nn.Linear(7, 5), (7,)),
    (nn.Linear(7, 5, bias=False), (7,)),
    (nn.Conv2d(2, 3, 3), (2, 6, 5)),
    (nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 7, 7)),
    (nn.Conv2d(1, 2, (3, 1), bias=False), (1, 5, 4)),
    (nn.ReLU(), (11,)),
    (nn.MaxPool2d(2), (2, 6, 6)),
    (nn.MaxPool2d(3, stride=1, padding=1), (1, 5, 5)),
    (nn.AvgPool2d(2), (2, 6, 6)),
    (nn.AvgPool2d(3, stride=2, padding=1), (1, 7, 7)),
    (nn.AdaptiveAvgPool2d(1), (3, 4, 4)),
    (nn.BatchNorm1d(6), (6,)),
    (nn.BatchNorm2d(2), (2, 3, 3)),
    (nn.Flatten(), (2, 3, 3)),
    (nn.Dropout(0.5), (5,)),
])
def test_each_layer_matches_twin(layer: nn.Module, shape: tuple[int, ...]) -> None:
    _check(nn.Sequential(layer, nn.Flatten()).eval(), shape)


def test_residual_block_with_batchnorm() -> None:
    out, _ = _check(ResidualNet(), (2, 6, 6), batch=2)
    assert out.shape == (2, 3)


def test_pools_and_standalone_batchnorm() -> None:
    _check(PoolNet(), (1, 8, 8), batch=2)


def test_argmax_is_one_hot_of_twin() -> None:
    model = nn.Sequential(nn.Linear(6, 9)).eval()
    out, twin = _check(model, (6,), batch=5, argmax=True)
    assert torch.equal(out.sum(1), torch.ones(5, dtype=out.dtype))


def test_close_to_float_pytorch() -> None:
    torch.manual_seed(0)  # not secret: model init
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 4)).eval()
    x = torch.randn(4, 1, 8, 8)
    out, _ = secure_inference(model, x)
    with torch.no_grad():
        assert (out - model(x).double()).abs().max() < 5e-3


def test_serve_many_batches_with_one_sharing() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    batches = [torch.randn(2, 4), torch.randn(5, 4), torch.randn(2, 4)]
    outs, reports = serve(model, batches)
    graph = convert(model, (4,))
    for x, out, rep in zip(batches, outs, reports, strict=True):
        assert (out - twin_forward(graph, x)).abs().max() < TWIN_ATOL
        assert rep.batch_size == len(x) and rep.offline_bytes > 0
    assert len({r.setup_s for r in reports}) == 1  # weights shared once


@pytest.mark.parametrize("x, err, needle", [
    (torch.zeros(2, 5), ValueError, "shape"),
    (torch.zeros(2, 4, dtype=torch.int64), TypeError, "floating-point"),
    (torch.tensor([[float("nan"), 0.0, 0.0, 0.0]]), ValueError, "NaN"),
    ([[0.0] * 4], TypeError, "torch.Tensor"),
])
def test_bad_inputs_are_refused(x, err, needle) -> None:
    model = nn.Sequential(nn.Linear(4, 2)).eval()
    graph = convert(model, (4,))
    with pytest.raises(err, match=needle):
        secure_inference(graph, x)


def test_bad_transport_and_reveal() -> None:
    model = nn.Sequential(nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match="transport"):
        secure_inference(model, torch.zeros(1, 4), transport="carrier-pigeon")
    with pytest.raises(ValueError, match="reveal_to"):
        secure_inference(model, torch.zeros(1, 4), reveal_to=2)


def test_model_owner_never_sees_the_input_or_output(monkeypatch) -> None:
    """Log every message each party's process receives, at the transport."""
    received: list[tuple[str, str, object]] = []
    original = Link._recv

    def logging_recv(self):
        obj = original(self)
        received.append((threading.current_thread().name, self.peer_name, obj))
        return obj

    monkeypatch.setattr(Link, "_recv", logging_recv)
    torch.manual_seed(1)  # not secret: model init and test data
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(6, 16) * 3
    out, _ = secure_inference(model, x)
    assert out is not None
    enc = encode(x.double()).flatten()
    to_owner = [obj for thread, _, obj in received if thread.replace("-", " ") == "veil party 0"]
    assert to_owner, "the model owner received nothing: the log hook is broken"
    tensors = list(_tensors(to_owner))
    assert tensors
    plain_out = encode(model(x).detach().double()).flatten()
    for t in tensors:
        if t.dtype != torch.int64:
            continue
        # Shares and masked openings are uniform in Z_2^64: a coincidence with one of the
        # encoded inputs or logits has probability ~2^-50; any hit means a leak.
        assert not torch.isin(enc, t.flatten()).any()
        assert not torch.isin(plain_out, t.flatten()).any()


def test_output_revealed_only_to_the_data_owner(monkeypatch) -> None:
    from veil.nn import inference

    captured = {}
    original = inference._collect

    def spy(results, *args):
        captured["results"] = results
        return original(results, *args)

    monkeypatch.setattr(inference, "_collect", spy)
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    out, _ = secure_inference(model, torch.ones(2, 3))
    r0, r1 = captured["results"]
    assert r0["batches"][0]["output"] is None
    assert torch.is_tensor(r1["batches"][0]["output"])


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


def test_data_owner_never_sees_the_weights(monkeypatch) -> None:
    """The weights are opened once under the dealer's masks: never in the clear."""
    received: list[tuple[str, object]] = []
    original = Link._recv

    def logging_recv(self):
        obj = original(self)
        received.append((threading.current_thread().name, obj))
        return obj

    monkeypatch.setattr(Link, "_recv", logging_recv)
    torch.manual_seed(2)  # not secret: model init and test data
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    serve(model, [torch.randn(2, 16), torch.randn(3, 16)])
    weights = torch.cat([encode(p.detach().double()).flatten() for p in model.parameters()])
    tensors = [t for thread, obj in received if thread.replace("-", " ") == "veil party 1"
               for t in _tensors(obj) if t.dtype == torch.int64]
    assert tensors, "the data owner received nothing: the log hook is broken"
    for t in tensors:
        assert not torch.isin(weights, t.flatten()).any()


def test_online_traffic_does_not_grow_with_the_weights() -> None:
    # The weights (64 x 512 x 8 bytes = 256 KiB) are opened once, at sharing time; a query
    # opens only its activations.
    model = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 2)).eval()
    _, reports = serve(model, [torch.randn(1, 512), torch.randn(1, 512)])
    weight_bytes = 8 * (512 * 64 + 64 * 2)
    for rep in reports:
        assert rep.setup_bytes >= weight_bytes
        assert rep.online_bytes < weight_bytes / 8


def test_lower_level_pieces_with_a_preprocessed_store(tmp_path) -> None:
    import veil
    from veil.nn.secure import material_plan, secure_forward, setup_plan, share_weights
    from veil.sharing import preprocess

    model = ResidualNet()
    graph = convert(model, (2, 6, 6))
    batches = [torch.randn(2, 2, 6, 6), torch.randn(2, 2, 6, 6)]
    session = "doc-session"
    plan = setup_plan(graph, session) + 2 * material_plan(graph, 2, session)
    preprocess(plan, tmp_path / "material")

    def job(party):
        shared = share_weights(party, graph if party.rank == 0 else graph.public(),
                               session=session)
        outs = []
        for x in batches:
            xs = party.share(x if party.rank == 1 else None, owner=1, shape=tuple(x.shape))
            outs.append(secure_forward(party, shared, xs).reveal())
        return outs

    outs, _ = veil.run(job, store=tmp_path / "material", timeout=30)
    for x, out in zip(batches, outs, strict=True):
        assert (out - twin_forward(graph, x)).abs().max() < TWIN_ATOL


@pytest.mark.parametrize("offline", ["prefetch", "stream"])
def test_prefetched_and_streamed_material_give_the_same_outputs(offline) -> None:
    model = PoolNet()
    graph = convert(model, (1, 8, 8))
    batches = [torch.randn(2, 1, 8, 8), torch.randn(3, 1, 8, 8)]
    outs, reports = serve(model, batches, offline=offline)
    for x, out, rep in zip(batches, outs, reports, strict=True):
        assert (out - twin_forward(graph, x)).abs().max() < TWIN_ATOL
        assert rep.extra["offline_mode"] == offline and rep.online_rounds > 0


def test_unknown_offline_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="offline"):
        serve(nn.Sequential(nn.Linear(4, 2)).eval(), [torch.zeros(1, 4)], offline="later")
