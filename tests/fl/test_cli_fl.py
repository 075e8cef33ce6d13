from typer.testing import CliRunner

from veil.cli import app


def test_fl_commands_listed_and_bad_input_refused():
    runner = CliRunner()
    res = runner.invoke(app, ["fl", "--help"])
    assert res.exit_code == 0 and "simulate" in res.output and "deploy" in res.output
    res = runner.invoke(app, ["fl", "simulate", "--aggregation", "bogus", "--dataset", "digits",
                              "--model", "mlp"])
    assert res.exit_code == 2 and "aggregation must be one of" in res.output
    res = runner.invoke(app, ["fl", "simulate", "--aggregation", "secagg+", "--dp-noise", "1",
                              "--dataset", "digits", "--model", "mlp"])
    assert res.exit_code == 2 and "two-server" in res.output
    res = runner.invoke(app, ["fl", "deploy", "--partition", "shards", "--dataset", "digits"])
    assert res.exit_code == 2 and "unknown partition" in res.output


def test_plot_history(tmp_path):
    from veil.cli.fl import plot_history
    h = {"config": {"aggregation": "two-server", "delta": 1e-5}, "initial": {"accuracy": 0.1},
         "rounds": [{"round": 1, "accuracy": 0.5, "epsilon": 0.7},
                    {"round": 2, "accuracy": 0.7, "epsilon": 1.0}]}
    files = plot_history(h, tmp_path)
    assert [f.split("/")[-1] for f in files] == ["accuracy.png", "epsilon.png"]
    assert all((tmp_path / f.split("/")[-1]).stat().st_size > 1000 for f in files)
