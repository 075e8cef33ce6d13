"""Private training (veil.nn.training): bit-exact agreement with the fixed-point twin, what is
opened, the parties' views, and clear errors."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import veil
from veil.nn import UnsupportedModelError
from veil.nn.training import secure_train, twin_accuracy, twin_train


def _digits(n: int | None = None):
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(d.target)
    return (x, y) if n is None else (x[:n], y[:n])


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(4, 10))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc1, self.fc2, self.out = nn.Linear(64, 16), nn.Linear(16, 16), nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.out(h + torch.relu(self.fc2(h)))


def _same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("make, loss", [(_cnn, "cross_entropy"), (_Residual, "mse")])
def test_private_training_is_the_fixed_point_twin_bit_for_bit(make, loss) -> None:
    x, y = _digits(100)
    kw = dict(epochs=1, batch_size=40, lr=0.05, momentum=0.9, weight_decay=1e-3, loss=loss,
              seed=3)
    model = make()
    trained, report = secure_train(model, x, y, **kw)
    _same_weights(trained, twin_train(model, x, y, **kw))
    assert not _equal_state(trained, model)  # it did learn something
    assert report.batches == 3 and report.rounds_per_batch > 0
    assert report.opened == [{"value": "trained weights and biases", "to": [0]}]


def _equal_state(a, b) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_twin_training_follows_float_sgd() -> None:
    """One epoch of the twin stays close to torch.optim.SGD in float (fixed-point drift)."""
    x, y = _digits(256)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    twin = twin_train(model, x, y, epochs=1, batch_size=32, lr=0.1, momentum=0.9,
                      weight_decay=1e-3, loss="cross_entropy")
    ref = _float_train(model, x, y, 32, 0.1, 0.9, 1e-3)
    for k, v in twin.state_dict().items():
        assert (v - ref.state_dict()[k]).abs().max() < 5e-3, k


def _float_train(model, x, y, batch, lr, momentum, wd):
    import copy

    ref = copy.deepcopy(model).double()
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    for i in range(0, len(x), batch):
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x[i:i + batch].double()), y[i:i + batch]).backward()
        opt.step()
    return ref.float()


def test_report_lists_every_opened_value_and_nothing_else() -> None:
    x, y = _digits(60)
    xt, yt = _digits(None)
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    trained, report = secure_train(model, x, y, epochs=2, batch_size=30, lr=0.1, loss="mse",
                                   reveal_to=1, x_test=xt[-50:], y_test=yt[-50:], curve=True,
                                   seed=0)
    assert report.opened == [
        {"value": "training accuracy of each epoch (one count per epoch)", "to": [1]},
        {"value": "test accuracy (the count of correct predictions)", "to": [0, 1]},
        {"value": "trained weights and biases", "to": [1]},
    ]
    assert len(report.curve) == 2 and all(0 <= c <= 1 for c in report.curve)
    assert report.test_accuracy == pytest.approx(twin_accuracy(trained, xt[-50:], yt[-50:]))


def test_each_party_view_is_uniform_whatever_the_other_party_data(monkeypatch) -> None:
    """Everything a party receives from its peer during training (masked openings) has
    every bit set with frequency 1/2, for data of zeros and for large data alike, and for
    zero weights and large weights alike."""
    from tests.mpc.mpc_helpers import bit_frequencies, record_received
    from veil.nn import training
    from veil.nn.training import train_job

    views: dict[int, list] = {}

    def recording_job(party, private, public, cfg, progress=None):
        views[party.rank] = record_received(party)
        return train_job(party, private, public, cfg, progress)

    monkeypatch.setattr(training, "train_job", recording_job)
    torch.manual_seed(5)
    for scale in (0.0, 50.0):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale / 10)
        x = torch.full((64, 1, 8, 8), scale)
        y = torch.zeros(64, dtype=torch.long)
        secure_train(model, x, y, epochs=1, batch_size=32, lr=0.01, loss="mse")
        for rank in (0, 1):
            ints = [t.flatten() for msg in views[rank]
                    for t in (msg if isinstance(msg, list) else [msg])
                    if isinstance(t, torch.Tensor) and t.dtype == torch.int64]
            allv = torch.cat(ints)
            assert allv.numel() > 20_000
            freq = bit_frequencies(allv)
            assert (freq - 0.5).abs().max().item() < 0.02, (rank, scale, freq)


@pytest.mark.parametrize("model, x, y, err, needle", [
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh()), None, None,
     UnsupportedModelError, "Tanh"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 10)),
     None, None, UnsupportedModelError, "BatchNorm is not supported in private training"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), None, torch.full((8,), 10),
     ValueError, "labels outside 0..9"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), None, torch.zeros(7, dtype=torch.long),
     ValueError, "8 samples but y has 7"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), torch.full((8, 1, 8, 8), float("nan")),
     None, ValueError, "NaN"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), torch.zeros(8, 1, 8, 7), None,
     ValueError, "shape"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), torch.full((8, 1, 8, 8), 1e9), None,
     ValueError, "scale them first"),
])
def test_bad_inputs_are_refused_before_any_computation(model, x, y, err, needle) -> None:
    x = torch.zeros(8, 1, 8, 8) if x is None else x
    y = torch.zeros(8, dtype=torch.long) if y is None else y
    with pytest.raises(err, match=needle):
        secure_train(model, x, y, epochs=1, lr=0.1)


def test_refusal_names_the_source_line() -> None:
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return torch.sigmoid(self.fc(x.flatten(1)))

    with pytest.raises(UnsupportedModelError, match="test_nn_training.py.*torch.sigmoid"):
        secure_train(Net(), torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), epochs=1,
                     lr=0.1)


def test_weights_nobody_knows_are_served_as_they_are(tmp_path) -> None:
    """reveal_to=None: nothing is opened, each party keeps its shares in its own file, and
    serve() answers queries with them; the answers are the twin-trained model's."""
    from veil.nn.inference import serve
    from veil.nn.secure import SharedWeights

    x, y = _digits(80)
    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    kw = dict(epochs=1, batch_size=40, lr=0.1, loss="mse", seed=1)
    handle, report = secure_train(model, x, y, reveal_to=None, shares_dir=str(tmp_path), **kw)
    assert isinstance(handle, SharedWeights) and report.opened == []
    for f in handle.files:
        assert (tmp_path / f).stat().st_mode & 0o077 == 0
    shares = [torch.load(f, weights_only=True) for f in handle.files]
    twin = twin_train(model, x, y, **kw)
    first = shares[0]["_1.weight"] + shares[1]["_1.weight"]   # the test may add them up
    assert torch.equal(first, torch.round(twin.state_dict()["1.weight"].double().t() * 2**20)
                       .long())
    outs, _ = serve(handle, [x[:5]], reveal_to=1)
    with torch.no_grad():
        assert (outs[0] - twin(x[:5]).double()).abs().max() < 1e-2
    with pytest.raises(ValueError, match="reveal_to must be 0, 1 or None"):
        secure_train(model, x, y, reveal_to=2, **kw)


def test_lazy_name() -> None:
    assert veil.secure_train is secure_train


@pytest.mark.slow
def test_one_full_private_epoch_on_digits_matches_the_twin() -> None:
    """All 1,797 scikit-learn digits, batch 128 (15 steps, the last one short), over TCP
    (three processes): the trained weights equal the twin's exactly (tolerance 0), and the
    twin is within 5e-3 of float PyTorch SGD on the same batches (measured 1.6e-3 at 20
    fractional bits: the softmax approximation and fixed point, through momentum)."""
    x, y = _digits()
    torch.manual_seed(6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    kw = dict(epochs=1, batch_size=128, lr=0.1, momentum=0.9, loss="cross_entropy")
    trained, report = secure_train(model, x, y, transport="tcp", shuffle=False, **kw)
    twin = twin_train(model, x, y, **kw)
    _same_weights(trained, twin)
    ref = _float_train(model, x, y, 128, 0.1, 0.9, 0.0)
    for k, v in twin.state_dict().items():
        assert (v - ref.state_dict()[k]).abs().max() < 5e-3, k
    assert report.batches == 15 and report.transport == "tcp"
    assert twin_accuracy(trained, x, y) > 0.5


def test_a_crashed_run_resumes_from_its_checkpoints(tmp_path) -> None:
    """The data owner's process dies in epoch 2; resume=True continues from both parties'
    epoch-1 checkpoints (fresh dealer material) and ends with the uninterrupted run's
    weights."""
    from veil.mpc.runtime import PartyFailedError

    x, y = _digits(60)
    torch.manual_seed(8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    kw = dict(epochs=3, batch_size=20, lr=0.1, loss="mse", seed=5,
              checkpoint_dir=str(tmp_path))

    def crash(done: int, total: int) -> None:
        if done == 4:  # first step of the second epoch
            raise RuntimeError("simulated crash")

    with pytest.raises(PartyFailedError, match="simulated crash"):
        secure_train(model, x, y, progress=crash, **kw)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["party0-checkpoint.pt", "party1-checkpoint.pt"]
    trained, report = secure_train(model, x, y, resume=True, **kw)
    twin = twin_train(model, x, y, epochs=3, batch_size=20, lr=0.1, loss="mse", seed=5)
    _same_weights(trained, twin)
    assert len(report.epoch_s) == 2  # epochs 2 and 3 only
    (tmp_path / "party1-checkpoint.pt").unlink()
    with pytest.raises(PartyFailedError, match="checkpoints differ"):
        secure_train(model, x, y, resume=True, **kw)
