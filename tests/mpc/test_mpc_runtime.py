"""veil.run: failures and timeouts, plans and stores, dealer checks, accounting, multi-host API."""

import socket
import threading
import time

import pytest
import torch

import veil
from veil.comm.wire import wire_size
from veil.mpc import PartyFailedError
from veil.sharing import Plan, preprocess


def _mul_job(party, n=4):
    x = party.share(torch.arange(n, dtype=torch.float32) if party.rank == 0 else None, owner=0,
                    shape=(n,))
    y = party.share(torch.ones(n) * 2 if party.rank == 1 else None, owner=1, shape=(n,))
    return (x * y).reveal(), party.stats()


def test_failing_party_makes_the_other_fail_fast_with_its_reason():
    def job(party):
        if party.rank == 1:
            raise ValueError("bad data in party 1")
        return party.exchange(torch.ones(2))

    t0 = time.perf_counter()
    with pytest.raises(PartyFailedError, match="party 1 failed: ValueError: bad data") as info:
        veil.run(job, timeout=30)
    assert info.value.rank == 1
    assert time.perf_counter() - t0 < 5  # not the 30 s timeout


def test_silent_peer_times_out_with_clear_error():
    def job(party):
        if party.rank == 1:
            time.sleep(0.8)
            return None
        return party.exchange(torch.ones(2))

    t0 = time.perf_counter()
    with pytest.raises(PartyFailedError, match="party 0 failed: PeerTimeoutError: no message "
                                               "from party 1 within 0.3 s"):
        veil.run(job, timeout=0.3)
    assert time.perf_counter() - t0 < 5


def test_stats_count_rounds_and_bytes_at_the_transport():
    def job(party):
        x = party.share(torch.ones(16, 16) if party.rank == 0 else None, owner=0, shape=(16, 16))
        y = party.share(torch.ones(16, 16) if party.rank == 1 else None, owner=1, shape=(16, 16))
        before = party.stats()
        z = x @ y
        after = party.stats()
        z.reveal()
        return before, after, party.stats()

    (b0, a0, e0), (b1, a1, _) = veil.run(job)
    assert b0["rounds"] == 0 and a0["rounds"] == 1 and e0["rounds"] == 2
    # One message with e and f shares: two 16x16 int64 tensors plus header and framing.
    expected = wire_size([torch.zeros(16, 16, dtype=torch.int64)] * 2) + 8
    assert a0["bytes_sent"] == a1["bytes_received"] == expected
    assert a0["messages_sent"] == 1 and a0["materials_used"] == 1
    # Seed compression: party 0 receives a seed, party 1 a seed plus c1 (16x16 int64).
    assert a0["offline_bytes_received"] < 200 < 2048 < a1["offline_bytes_received"]


def test_plan_moves_dealer_work_offline():
    plan = Plan().add("beaver", shape_x=[4], shape_y=[4])
    r0, r1 = veil.run(_mul_job, plan=plan)
    assert torch.equal(r0[0], torch.arange(4) * 2.0)
    s = r0[1]
    assert s["offline_bytes_received"] > 0 and s["materials_used"] == 1
    assert s["offline_s"] > 0 and s["online_s"] > 0


def test_plan_exhausted_and_mismatch_raise():
    with pytest.raises(PartyFailedError, match="exhausted: the plan had 0 items"):
        veil.run(_mul_job, plan=[])
    with pytest.raises(PartyFailedError, match="MaterialMismatchError: item 0 of the plan"):
        veil.run(_mul_job, plan=Plan().add("beaver", shape_x=[5], shape_y=[5]))


def test_store_run_then_replay_is_impossible(tmp_path):
    preprocess(Plan().add("beaver", shape_x=[4], shape_y=[4]), tmp_path / "s")
    r0, _ = veil.run(_mul_job, store=tmp_path / "s")
    assert torch.equal(r0[0], torch.arange(4) * 2.0)
    assert r0[1]["offline_bytes_received"] == 0  # nothing from the dealer
    with pytest.raises(PartyFailedError, match="exhausted|already consumed"):
        veil.run(_mul_job, store=tmp_path / "s")
    with pytest.raises(FileNotFoundError):
        veil.run(_mul_job, store=tmp_path / "missing")


def test_stores_of_different_runs_are_refused(tmp_path):
    preprocess(Plan().add("beaver", shape_x=[4], shape_y=[4]), tmp_path / "a")
    preprocess(Plan().add("beaver", shape_x=[4], shape_y=[4]), tmp_path / "b")
    (tmp_path / "b" / "party1").rename(tmp_path / "a" / "party1x")
    (tmp_path / "a" / "party1").rename(tmp_path / "b" / "party1")
    (tmp_path / "a" / "party1x").rename(tmp_path / "a" / "party1")
    with pytest.raises(PartyFailedError, match="stores do not match"):
        veil.run(_mul_job, store=tmp_path / "a")


def test_diverging_programs_are_caught_by_the_dealer():
    def job(party):
        party.material("beaver", shape_x=[2 + party.rank], shape_y=[2 + party.rank])

    with pytest.raises(PartyFailedError, match="different material"):
        veil.run(job, timeout=10)


def test_unknown_material_kind():
    def job(party):
        party.material("no_such_kind", n=1)

    with pytest.raises(PartyFailedError, match="no dealer material of kind 'no_such_kind'"):
        veil.run(job, timeout=10)


def test_material_is_never_served_twice_by_the_dealer():
    def job(party):
        m1 = party.material("beaver", shape_x=[8], shape_y=[8])
        m2 = party.material("beaver", shape_x=[8], shape_y=[8])
        return m1["a"], m2["a"]

    (a0, b0), (a1, b1) = veil.run(job)
    assert not torch.equal(a0 + a1, b0 + b1)


def test_material_hooks_run_on_matching_items_as_they_arrive():
    def job(party):
        seen = []

        def hook(params, material):
            seen.append(params["shape_x"])
            return {**material, "hooked": True}

        party.on_material("beaver", hook, shape_x=[3])
        party.prefetch([("beaver", {"shape_x": [3], "shape_y": [3]}),
                        ("beaver", {"shape_x": [4], "shape_y": [4]})])
        hooked_early = list(seen)  # the hook ran when the material arrived, not when used
        m3 = party.material("beaver", shape_x=[3], shape_y=[3])
        m4 = party.material("beaver", shape_x=[4], shape_y=[4])
        return hooked_early, m3.get("hooked"), m4.get("hooked")

    for result in veil.run(job):
        assert result == ([[3]], True, None)


def test_run_argument_validation():
    with pytest.raises(ValueError, match="transport"):
        veil.run(_mul_job, transport="carrier-pigeon")
    with pytest.raises(ValueError, match="three addresses"):
        veil.run(_mul_job, transport="tcp", rank=0)
    with pytest.raises(ValueError, match="timeout"):
        veil.run(_mul_job, timeout=0)


def _run_three(start):
    """Run ``start(rank)`` for ranks 0, 1 and 2 (parties and dealer) in threads; results."""
    results = {}
    threads = [threading.Thread(target=lambda r=r: results.__setitem__(r, start(r)))
               for r in (0, 1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from veil.comm.credentials import init_keys

    d = tmp_path_factory.mktemp("keys")
    init_keys(d)
    return d


def test_multi_host_api_with_explicit_ranks_and_addresses(keys):
    # The same program started three times with its rank (here threads of one process).
    p0, p1 = _free_ports(2)
    addresses = [f"127.0.0.1:{p0}", f"127.0.0.1:{p1}", "127.0.0.1:0"]
    results = _run_three(lambda rank: veil.run(
        _mul_job if rank < 2 else None, transport="tcp", rank=rank, addresses=addresses,
        session="test", timeout=20, credentials=keys))
    assert torch.equal(results[0][0], torch.arange(4) * 2.0)
    assert torch.equal(results[1][0], results[0][0])
    assert results[2]["items"] == 1


def test_private_inputs_reach_only_their_party():
    def job(party, mine, scale):
        return mine * scale

    r0, r1 = veil.run(job, inputs=(torch.ones(2), torch.zeros(3)), args=(2,))
    assert torch.equal(r0, 2 * torch.ones(2)) and torch.equal(r1, torch.zeros(3))
    with pytest.raises(ValueError, match="one input for each"):
        veil.run(job, inputs={0: 1})


def test_command_line_entry_point_runs_dealer_and_parties(keys):
    from veil.mpc.runtime import _main

    p0, p1 = _free_ports(2)
    addrs = f"127.0.0.1:{p0},127.0.0.1:{p1},127.0.0.1:0"
    argvs = {0: ["party", "--rank", "0", "--job", "test_mpc_runtime:_mul_job"],
             1: ["party", "--rank", "1", "--job", "test_mpc_runtime:_mul_job"],
             2: ["dealer"]}
    results = _run_three(lambda rank: _main(argvs[rank] + ["--addresses", addrs, "--keys",
                                                           str(keys), "--timeout", "20"]))
    assert torch.equal(results[0][0], torch.arange(4) * 2.0)
    assert results[2]["items"] == 1
    with pytest.raises(SystemExit):
        _main(["party", "--addresses", addrs, "--keys", str(keys)])


# ------------------------------------------------------------------------------ failure reports

SECRET = 1.23457e14


def _leaky_job(party):
    # party 1's private input is outside the fixed-point range: its error text quotes it
    x = party.share(torch.tensor([SECRET]) if party.rank == 1 else None, owner=1, shape=(1,))
    return x.reveal()


def test_private_value_in_an_error_never_reaches_the_other_participants(keys):
    p0, p1 = _free_ports(2)
    addresses = [f"127.0.0.1:{p0}", f"127.0.0.1:{p1}", "127.0.0.1:0"]

    def start(rank):
        try:
            return veil.run(_leaky_job if rank < 2 else None, transport="tcp", rank=rank,
                            addresses=addresses, timeout=20, credentials=keys)
        except PartyFailedError as exc:
            return exc

    results = _run_three(start)
    own = results[1]
    assert isinstance(own, PartyFailedError) and "1.23457e+14" in str(own)  # local detail
    for rank in (0, 2):
        text = str(results[rank]) + repr(results[rank].__cause__)
        assert isinstance(results[rank], PartyFailedError)
        assert "party 1 failed in its job (ValueError" in text, text
        assert "1.23457e+14" not in text and "123457" not in text, text


def test_local_peers_get_only_the_generic_reason():
    seen = {}

    def job(party):
        if party.rank == 1:
            raise ValueError(f"weight {SECRET} is NaN-adjacent")
        try:
            party.exchange(torch.ones(1))
        except Exception as exc:
            seen[0] = str(exc)
            raise

    with pytest.raises(PartyFailedError, match="party 1 failed: ValueError: weight 1"):
        veil.run(job, timeout=10)
    assert "party 1 failed in its job (ValueError" in seen[0]
    assert str(SECRET) not in seen[0]


def test_stalled_party_is_blamed_not_the_one_that_waited():
    def job(party):
        if party.rank == 1:
            time.sleep(4)  # stalls before asking the dealer
        x = party.share(torch.ones(2) if party.rank == 0 else None, owner=0, shape=(2,))
        return (x * x).reveal()

    t0 = time.perf_counter()
    with pytest.raises(PartyFailedError, match="party 1 stalled") as info:
        veil.run(job, timeout=0.3)
    assert info.value.rank == 1 and info.value.stalled
    assert "party 0 waited" in str(info.value)
    assert time.perf_counter() - t0 < 3.5  # reported without waiting for the sleeper


def test_shape_mismatch_is_the_job_error_not_the_dealer():
    def job(party):
        x = party.share(torch.ones(2, 3) if party.rank == 0 else None, owner=0, shape=(2, 3))
        y = party.share(torch.ones(4, 5) if party.rank == 1 else None, owner=1, shape=(4, 5))
        return (x @ y).reveal()

    with pytest.raises(PartyFailedError) as info:
        veil.run(job, timeout=10)
    assert info.value.rank in (0, 1)
    assert "the dealer failed" not in str(info.value)
    assert "(2, 3) @ (4, 5)" in str(info.value)


def test_transport_is_a_typed_choice():
    from veil.mpc.runtime import Transport

    assert Transport.parse("tcp") is Transport.TCP
    r0, _ = veil.run(_mul_job, transport=Transport.LOCAL)
    assert torch.equal(r0[0], torch.arange(4) * 2.0)


def test_progress_reaches_the_caller():
    def job(party, progress):
        for i in range(3):
            if party.rank == 1:
                progress(i + 1, 3)
        return party.rank

    seen = []
    assert veil.run(job, progress=lambda d, t: seen.append((d, t))) == [0, 1]
    assert seen == [(1, 3), (2, 3), (3, 3)]
