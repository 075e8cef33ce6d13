"""``veil dp`` commands."""

import json

import pytest
from typer.testing import CliRunner

from veil.cli import app
from veil.dp import epsilon_for
from veil.dp.sgld import sgld_epsilon

runner = CliRunner()


@pytest.mark.parametrize("acc", ["rdp", "pld"])
def test_epsilon_json(acc):
    r = runner.invoke(app, ["dp", "epsilon", "--sigma", "1.1", "--sample-rate", "0.01",
                            "--steps", "300", "--delta", "1e-5", "--accountant", acc, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["epsilon"] == pytest.approx(epsilon_for(1.1, 0.01, 300, 1e-5, acc))


def test_sgld_epsilon_json_and_assumption_error():
    args = ["dp", "sgld-epsilon", "--lipschitz", "1.5", "--strong-convexity", "0.01",
            "--smoothness", "0.51", "--n", "30000", "--sigma", "0.0073", "--steps", "2000",
            "--delta", "1e-5"]
    r = runner.invoke(app, [*args, "--lr", "1.0", "--json"])
    assert r.exit_code == 0, r.output
    ref = sgld_epsilon(1e-5, lipschitz=1.5, strong_convexity=0.01, n=30000, sigma=0.0073,
                       lr=1.0, steps=2000)[0]
    assert json.loads(r.stdout)["epsilon"] == pytest.approx(ref)
    bad = runner.invoke(app, [*args, "--lr", "3.0"])
    assert bad.exit_code == 2 and "1/β" in bad.output


def test_bad_input_exit_code():
    r = runner.invoke(app, ["dp", "epsilon", "--sigma", "0", "--sample-rate", "0.01",
                            "--steps", "3", "--delta", "1e-5"])
    assert r.exit_code == 2


@pytest.mark.parametrize("method", ["dp-sgd", "dp-sgld"])
def test_train_on_digits(method):
    r = runner.invoke(app, ["dp", "train", "--method", method, "--dataset", "digits",
                            "--epochs", "2", "--batch-size", "100", "--epsilon", "4", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["epsilon"] <= 4.0 + 1e-9 and out["test_accuracy"] > 0.3


def test_epsilon_json_is_strict_json_even_when_infinite():
    r = runner.invoke(app, ["dp", "epsilon", "--sigma", "0.5", "--sample-rate", "1e-4",
                            "--steps", "100000", "--delta", "1e-8", "--accountant", "pld",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["epsilon"] == pytest.approx(4.467, rel=2e-3)
    r = runner.invoke(app, ["dp", "epsilon", "--sigma", "0.01", "--sample-rate", "1.0",
                            "--steps", "10", "--delta", "1e-10", "--accountant", "pld",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert "Infinity" not in r.stdout and "NaN" not in r.stdout
    json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON token {c}"))
