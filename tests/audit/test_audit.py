"""``veil audit``: every way users save models loads (or fails in one line); the report runs end
to end, its HTML is self-contained, and a real browser renders its tables and figures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from veil.audit.audit import ModelLoadError, load_user_model
from veil.cli import app

USERNET = textwrap.dedent("""
    import torch
    from torch import nn

    class UserNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(64, 32)
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))
""")


@pytest.fixture
def usernet(tmp_path, monkeypatch):
    (tmp_path / "usernet_mod.py").write_text(USERNET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    mod = importlib.import_module("usernet_mod")
    torch.manual_seed(0)
    yield mod.UserNet().eval()
    sys.modules.pop("usernet_mod", None)


def test_every_format_loads(usernet, tmp_path):
    x = torch.randn(5, 1, 8, 8)
    want = usernet(x)
    torch.save(usernet.state_dict(), tmp_path / "sd.pt")
    torch.jit.save(torch.jit.script(usernet), str(tmp_path / "ts.pt"))
    torch.export.save(torch.export.export(usernet, (x,)), str(tmp_path / "m.pt2"))
    torch.save(usernet, tmp_path / "whole.pt")
    for path, arch in (("sd.pt", "usernet_mod:UserNet"), ("ts.pt", None), ("m.pt2", None),
                       ("whole.pt", None)):
        got = load_user_model(tmp_path / path, arch)(x)
        assert torch.allclose(got, want, atol=1e-6), path


def test_each_failure_is_one_line(usernet, tmp_path):
    torch.save(usernet.state_dict(), tmp_path / "sd.pt")
    torch.save(usernet, tmp_path / "whole.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    cases = [
        (tmp_path / "missing.pt", None, "does not exist"),
        (tmp_path / "sd.pt", None, "pass --arch"),
        (tmp_path / "sd.pt", "nowhere_mod:Net", "cannot import"),
        (tmp_path / "sd.pt", "usernet_mod", "module:Class"),
        (tmp_path / "junk.pt", None, "cannot read"),
        (tmp_path / "junk.pt2", None, "torch.export"),
    ]
    for path, arch, what in cases:
        with pytest.raises(ModelLoadError, match=what) as info:
            load_user_model(path, arch)
        assert "\n" not in str(info.value)
    sys.modules.pop("usernet_mod")  # the pickled class can no longer be imported
    sys.path.remove(str(tmp_path))
    with pytest.raises(ModelLoadError, match="PYTHONPATH") as info:
        load_user_model(tmp_path / "whole.pt")
    assert "\n" not in str(info.value)
    sys.path.insert(0, str(tmp_path))


def test_cli_failure_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["audit", "--model", str(tmp_path / "none.pt"),
                                   "--train-data", "digits:10", "--test-data", "digits:10"])
    assert res.exit_code == 1 and "does not exist" in res.output
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """One quick end-to-end audit with the DP defense (digits, few shadows)."""
    from torch import nn

    from veil.audit.targets import load_dataset
    from veil.models.training import train

    tmp = tmp_path_factory.mktemp("audit")
    x, y = load_dataset("digits", "train", 200)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    train(net, x, y, epochs=20)
    torch.save(net, tmp / "net.pt")
    page = tmp / "report.html"
    res = CliRunner().invoke(app, ["audit", "--model", str(tmp / "net.pt"), "--train-data",
                                   "digits:200", "--test-data", "digits:200", "--defenses", "dp",
                                   "--shadows", "2", "--epochs", "3", "--html", str(page),
                                   "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output), page


@pytest.mark.slow
def test_report_end_to_end(audited):
    report, page = audited
    assert set(report["rows"]) == {"model", "dp (epsilon=8)"}
    for row in report["rows"].values():
        assert set(row["membership"]) == {"threshold", "lira", "lira_offline"}
        assert 0.0 <= row["membership"]["lira"]["auc"] <= 1.0
        assert len(row["inversion"]) == 3
    # the unprotected model overfits 200 examples: it leaks more than chance
    assert report["rows"]["model"]["membership"]["threshold"]["auc"] > 0.55


@pytest.mark.slow
def test_html_is_self_contained(audited):
    _, page = audited
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)="(?!data:)', text)  # no external assets
    assert "http" not in text and "@import" not in text
    assert text.count('<img alt="') == 4  # ROC + inversion, model and defended
    assert text.count("<tr><td>") == 6    # 3 attacks x 2 models


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(b)), None)


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed "
                    "(Debian: apt-get install chromium; .ci/run installs it)")
def test_a_real_browser_renders_tables_and_figures(audited, tmp_path):
    import numpy as np
    from PIL import Image

    _, page = audited
    browser = _browser()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<tr><td>") == 6 and dom.count("<img") == 4
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2400",
                    page.as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 5  # not a blank page
    # every inline figure decodes: the browser reports a natural width for each image
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>document.body.setAttribute('data-widths', "
        "[...document.images].map(i => i.naturalWidth).join(','))</script></body>"))
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    widths = re.search(r'data-widths="([^"]*)"', dom).group(1).split(",")
    assert len(widths) == 4 and all(int(w) > 100 for w in widths)
