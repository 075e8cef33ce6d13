"""``veil train``: private training of a zoo network from the command line."""

import json

import pytest
from typer.testing import CliRunner

from veil.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_veil_train_network1_one_step_json(tmp_path):
    out = tmp_path / "w.pt"
    result = runner.invoke(app, ["train", "network1", "--dataset", "mnist", "--epochs", "1",
                                 "--limit", "64", "--batch-size", "64", "--test-images", "32",
                                 "--save", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["batches"] == 1 and 0 <= report["test_accuracy"] <= 1
    assert [o["value"] for o in report["opened"]] == [
        "test accuracy (the count of correct predictions)", "trained weights and biases"]
    assert out.exists()


def test_veil_train_refuses_unknown_recipes_and_datasets():
    result = runner.invoke(app, ["train", "alexnet"])
    assert result.exit_code != 0 and "no private-training recipe" in result.output
    result = runner.invoke(app, ["train", "network1", "--dataset", "cifar10"])
    assert result.exit_code != 0 and "trained on mnist" in result.output
    result = runner.invoke(app, ["train", "network1", "--reveal-to", "2", "--limit", "8"])
    assert result.exit_code != 0 and "--reveal-to" in result.output
