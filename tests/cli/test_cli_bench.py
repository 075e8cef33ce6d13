"""``veil bench``: a quick (smoke) run never overwrites the published bench/results/NAME.json."""

import sys
import types
from pathlib import Path

import pytest

from veil.bench import output as bench_output
from veil.cli import bench as cli_bench


@pytest.fixture
def fake_bench(monkeypatch):
    calls = []
    module = types.ModuleType("veil.bench.fakebench")
    module.main = lambda **kw: calls.append(kw)
    monkeypatch.setitem(sys.modules, "veil.bench.fakebench", module)
    return calls


@pytest.mark.parametrize("quick,output,want", [
    (True, None, Path("bench/results/quick/fakebench.json")),  # never the published file
    (False, None, None),                                         # the published file
    (True, Path("x.json"), Path("x.json")),                      # an explicit choice wins
])
def test_quick_runs_write_beside_the_published_results(fake_bench, quick, output, want):
    cli_bench._run("fakebench", False, output, quick)
    assert fake_bench == [{"json_stdout": False, "output": want, "quick": quick}]


def test_bench_scripts_apply_the_same_rule(fake_bench, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench/fakebench.py", "--quick"])
    main = sys.modules["veil.bench.fakebench"].main
    main.__module__ = "veil.bench.fakebench"
    bench_output.run_script(main, "fake")
    assert fake_bench[0]["output"] == Path("bench/results/quick/fakebench.json")


def test_the_mpc_benchmark_itself_never_defaults_a_quick_run_to_the_published_file(monkeypatch,
                                                                                     tmp_path):
    import veil.bench.mpc as mpc

    written = []
    monkeypatch.setattr(mpc, "run_benchmark", lambda quick: {"quick": quick})
    monkeypatch.setattr(mpc, "publish", lambda results, path, *a: written.append(path))
    mpc.main(quick=True)
    mpc.main(quick=False)
    assert written == [Path("bench/results/quick/mpc.json"), mpc.DEFAULT_OUTPUT]
