import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from veil.dp.accountants import PLDAccountant, RDPAccountant
from veil.fl.config import FLConfig
from veil.fl.dp import ClientDP
from veil.fl.strategy import KEY_PK_B, VeilFedAvg
from veil.fl.twoserver import TwoServerConfig, client_share

D = 20000



class Nodes:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


def one_round(strategy, n, deltas=None, rnd=1):
    current = ArrayRecord({"w": Array(np.zeros(D, dtype=np.float32))})
    msgs = list(strategy.configure_train(rnd, current, ConfigRecord(), Nodes(n)))
    replies = []
    for i, m in enumerate(msgs):
        delta = np.zeros(D) if deltas is None else deltas[i % len(deltas)]
        metrics = MetricRecord({"loss": 0.0, "num-examples": 10.0,
                                "veil.dp.fitted": float(np.linalg.norm(delta) <= strategy.dp.clip)})
        cfg = m.content["config"]
        if KEY_PK_B in cfg:
            ts = TwoServerConfig(int(cfg["veil.twoserver.ring-bits"]),
                                 int(cfg["veil.twoserver.frac-bits"]),
                                 float(cfg["veil.twoserver.max-weight"]),
                                 int(cfg["veil.twoserver.max-clients"]))
            share, sealed = client_share(delta, 1.0, ts, cfg[KEY_PK_B])
            content = RecordDict({"metrics": metrics,
                                  "veil.share": ArrayRecord({"share-a": Array(share)}),
                                  "veil.seed": ConfigRecord({"sealed-seed": sealed})})
        else:
            content = RecordDict({"metrics": metrics, "arrays": ArrayRecord(
                {"w": Array(delta.astype(np.float32))})})
        replies.append(Message(content, reply_to=m))
    arrays, _ = strategy.aggregate_train(rnd, replies)
    return arrays["w"].numpy().astype(np.float64), len(msgs)


@pytest.mark.parametrize("aggregation,factor", [("plain", 1.0), ("two-server", np.sqrt(2))])
def test_noise_has_the_stated_scale(aggregation, factor):
    dp = ClientDP(noise_multiplier=1.3, clip=0.7, sample_rate=0.5, population=20)
    strategy = VeilFedAvg(aggregation=aggregation, dp=dp,
                          twoserver=TwoServerConfig(ring_bits=64, frac_bits=24, max_clients=20))
    out, sampled = one_round(strategy, 20)
    assert 1 <= sampled <= 20
    # zero updates: the average is the noise alone, std = z·C / (qN) (each aggregator adds it)
    expected = factor * 1.3 * 0.7 / (0.5 * 20)
    # std of 20000 Gaussian samples: relative standard error 1/sqrt(2·20000) = 0.5 %
    assert out.std() == pytest.approx(expected, rel=0.03)
    assert abs(out.mean()) < 4 * expected / np.sqrt(D)


def test_epsilon_equals_veil_accountant():
    for name, cls in (("rdp", RDPAccountant), ("pld", PLDAccountant)):
        dp = ClientDP(noise_multiplier=1.1, clip=1.0, sample_rate=0.1, population=100,
                      accountant=name)
        strategy = VeilFedAvg(dp=dp)
        for rnd in range(1, 3):
            one_round(strategy, 100, rnd=rnd)
        acc = cls()
        acc.step(noise_multiplier=1.1, sample_rate=0.1, steps=2)
        assert dp.rounds_done == 2
        assert dp.epsilon(delta=1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
        assert strategy.rounds[2]["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)


def test_poisson_sampling_rate():
    dp = ClientDP(noise_multiplier=1.0, clip=1.0, sample_rate=0.2, population=1000)
    strategy = VeilFedAvg(dp=dp)
    counts = [len(list(strategy.configure_train(r, ArrayRecord({"w": Array(np.zeros(2))}),
                                                ConfigRecord(), Nodes(1000)))) for r in range(20)]
    # Binomial(1000, 0.2): mean 200, std 12.6; the mean of 20 draws within 4 standard errors
    assert abs(np.mean(counts) - 200) < 4 * 12.6 / np.sqrt(20)
    assert np.std(counts) > 3  # the cohort size varies: Poisson, not a fixed-size sample


def test_server_clips_and_adaptive_clip_moves():
    dp = ClientDP(noise_multiplier=1e-3, clip=0.5, sample_rate=1.0, population=4)
    out, _ = one_round(VeilFedAvg(dp=dp), 4, deltas=[np.full(D, 10.0)])
    # four clipped updates of norm C over qN = 4: the average moves by C
    assert np.linalg.norm(out) == pytest.approx(0.5, rel=0.01)
    ada = ClientDP(noise_multiplier=2.0, clip=1.0, sample_rate=1.0, population=40, adaptive=True)
    s = VeilFedAvg(dp=ada)
    one_round(s, 40)  # all updates fit: the clip shrinks towards the median norm
    assert ada.clip < 1.0 and ada.update_noise_multiplier > 2.0


def test_refusals():
    dp = ClientDP(noise_multiplier=1.0, clip=1.0, sample_rate=0.1, population=50)
    with pytest.raises(ValueError, match="true sampling rate"):
        list(VeilFedAvg(dp=dp).configure_train(1, ArrayRecord(), ConfigRecord(), Nodes(49)))
    with pytest.raises(ValueError, match="expected cohort"):
        ClientDP(noise_multiplier=1.0, clip=1.0, sample_rate=0.01, population=50)
    with pytest.raises(ValueError, match="noise_multiplier > 0"):
        ClientDP(noise_multiplier=0.0, clip=1.0, sample_rate=0.5, population=50)
    with pytest.raises(ValueError, match="no budget"):
        ClientDP(noise_multiplier=5.0, clip=1.0, sample_rate=0.5, population=50, adaptive=True,
                 bit_noise_std=1.0)
    with pytest.raises(ValueError, match="cannot see it"):
        VeilFedAvg(aggregation="two-server", dp=ClientDP(1.0, 1.0, 0.5, 50, adaptive=True))
    with pytest.raises(ValueError, match="two-server"):
        FLConfig(aggregation="secagg+", dp_noise=1.0)


@pytest.mark.parametrize("aggregation,factor", [("plain", 1.0), ("two-server", np.sqrt(2))])
def test_a_round_without_clients_is_released_with_noise(aggregation, factor):
    dp = ClientDP(noise_multiplier=1.0, clip=1.0, sample_rate=0.5, population=4)
    strategy = VeilFedAvg(aggregation=aggregation, dp=dp)
    current = ArrayRecord({"w": Array(np.zeros(D, dtype=np.float32))})
    list(strategy.configure_train(1, current, ConfigRecord(), Nodes(4)))
    arrays, _ = strategy.aggregate_train(1, [])   # nobody sampled, or nobody returned
    out = arrays["w"].numpy()
    assert out.std() == pytest.approx(factor * 1.0 / 2.0, rel=0.03)
    assert dp.rounds_done == 1 and strategy.rounds[1]["included"] == 0
