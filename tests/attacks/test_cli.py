import json

from typer.testing import CliRunner

from veil.bench.attacks import membership_ratios
from veil.cli.attack import app

runner = CliRunner()


def test_help_lists_the_three_attacks():
    out = runner.invoke(app, ["--help"]).output
    assert all(cmd in out for cmd in ("membership", "inversion", "gradient"))


def test_bad_arguments_are_rejected_before_any_work(tmp_path):
    r = runner.invoke(app, ["membership", "--targets", "overfit,nope", "-o", str(tmp_path)])
    assert r.exit_code != 0 and "targets" in r.output
    r = runner.invoke(app, ["membership", "--shadows", "3", "-o", str(tmp_path)])
    assert r.exit_code != 0 and "even" in r.output
    r = runner.invoke(app, ["inversion", "--model", str(tmp_path / "missing.pt")])
    assert r.exit_code != 0


def test_unloadable_models_fail_in_one_line(tmp_path):
    (tmp_path / "junk.pt2").write_bytes(b"not an exported program")
    import torch
    torch.save({"w": torch.zeros(2)}, tmp_path / "sd.pt")
    for name, what in (("junk.pt2", "torch.export"), ("sd.pt", "state_dict")):
        r = runner.invoke(app, ["inversion", "--model", str(tmp_path / name)])
        assert r.exit_code == 1 and what in r.output, r.output
        assert "Traceback" not in r.output and r.output.count("\n") <= 2


def test_inversion_with_a_saved_model(tmp_path):
    import torch

    from veil.audit.targets import Recipe, load_dataset, train
    x, y = load_dataset("digits", "train")
    model = train(Recipe(arch="linear", epochs=10, lr=1e-2, seed=0), x, y, 10)
    torch.save(model, tmp_path / "m.pt")
    r = runner.invoke(app, ["inversion", "--quick", "--dataset", "digits", "--model",
                            str(tmp_path / "m.pt"), "--classes", "1,7",
                            "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "report.json").exists()
    assert (tmp_path / "out" / "inversion.png").exists()
    assert "white-box" in r.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [c["class"] for c in report["modes"]["white-box"]["classes"]] == [1, 7]
    assert report["modes"]["white-box"]["recognised"] == 1.0


def test_membership_ratios():
    def attacks(lira, thr):
        return {"attacks": {"lira": {"tpr_at_0.1%_fpr": None, "tpr_at_1%_fpr": lira},
                            "threshold": {"tpr_at_0.1%_fpr": None, "tpr_at_1%_fpr": thr}}}
    r = membership_ratios({"targets": {"overfit": attacks(0.5, 0.1), "dp": attacks(0.01, 0.0),
                                       "skipped": {"skipped": "why"}}})
    assert r["overfit"]["lira_over_threshold_tpr_at_1%_fpr"] == 5.0
    assert r["overfit"]["lira_over_threshold_tpr_at_0.1%_fpr"] is None
    assert r["dp"]["lira_over_threshold_tpr_at_1%_fpr"] is None
    assert r["dp"]["lira_tpr_at_1%_fpr_vs_overfit"] == 0.02


def test_membership_of_a_saved_model(tmp_path):
    import numpy as np
    import torch

    from veil.audit.targets import Recipe, load_dataset, train
    x, y = load_dataset("digits", "train", limit=300)
    members = np.zeros(300, bool)
    members[::2] = True
    model = train(Recipe(arch="mlp", hidden=64, epochs=40, lr=3e-3, seed=0), x[members],
                  y[members], 10)
    torch.save(model, tmp_path / "m.pt")
    np.save(tmp_path / "members.npy", members)
    r = runner.invoke(app, ["membership", "--model", str(tmp_path / "m.pt"), "--members",
                            str(tmp_path / "members.npy"), "--dataset", "digits", "--recipe",
                            "generalised", "--shadows", "4", "--json", "-o", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(report["attacks"]) >= {"threshold", "shadow", "lira"}
    assert report["attacks"]["lira"]["tpr_at_0.1%_fpr"] is None    # 150 non-members
    assert report["attacks"]["threshold"]["auc"] > 0.5
    r = runner.invoke(app, ["membership", "--model", str(tmp_path / "m.pt")])
    assert r.exit_code != 0

