"""``veil keys``: create a deployment's credentials and check them."""

import os
import stat

from typer.testing import CliRunner

from veil.cli import app
from veil.comm.credentials import ROLES, Credentials

runner = CliRunner()


def test_keys_init_writes_loadable_private_credentials(tmp_path):
    d = tmp_path / "keys"
    result = runner.invoke(app, ["keys", "init", str(d), "--days", "30"])
    assert result.exit_code == 0, result.output
    for role in ROLES:
        creds = Credentials.load(d, role)
        assert stat.S_IMODE(os.stat(d / f"{role}.key").st_mode) == 0o600
        days = (creds.expires - creds.expires.now(creds.expires.tzinfo)).days
        assert 28 <= days <= 30
    assert stat.S_IMODE(os.stat(d / "ca.key").st_mode) == 0o600
    # a second init would lock out hosts holding the first CA: refused unless --force
    again = runner.invoke(app, ["keys", "init", str(d)])
    assert again.exit_code == 1 and "already holds credentials" in again.output
    assert runner.invoke(app, ["keys", "init", str(d), "--force"]).exit_code == 0


def test_keys_show_checks_each_role(tmp_path):
    d = tmp_path / "keys"
    runner.invoke(app, ["keys", "init", str(d)])
    shown = runner.invoke(app, ["keys", "show", str(d)])
    assert shown.exit_code == 0 and shown.output.count("valid until") == 3
    (d / "dealer.pem").write_bytes((d / "party0.pem").read_bytes())
    bad = runner.invoke(app, ["keys", "show", str(d)])
    assert bad.exit_code == 1 and "dealer: INVALID" in bad.output
    empty = runner.invoke(app, ["keys", "show", str(tmp_path)])
    assert empty.exit_code == 1
