"""The ``veil`` command line.

Each command family lives in its own module and registers a typer sub-app
here; heavy imports (torch, protocols) happen inside the commands, so that
``veil --help`` stays fast.
"""

from __future__ import annotations

import typer

from veil.cli import attack, bench, data, demo, dp, fe, models, service
from veil.cli import audit as audit_cli
from veil.cli import fl as fl_cli
from veil.cli import he as he_cli
from veil.cli import keys as keys_cli
from veil.cli import train as train_cli

app = typer.Typer(
    name="veil",
    help=(
        "Veil: privacy-preserving machine learning on PyTorch.\n\n"
        "Secure two-party computation with function secret sharing (private inference), "
        "differential privacy (DP-SGD, DP-SGLD), quadratic functional encryption, and the "
        "attacks that measure what a model leaks."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
app.add_typer(data.app, name="data")
app.add_typer(dp.app, name="dp")
app.add_typer(fl_cli.app, name="fl")
app.add_typer(attack.app, name="attack")
app.add_typer(fe.app, name="fe")
app.add_typer(he_cli.app, name="he")
app.command("audit")(audit_cli.audit)
app.add_typer(models.app, name="models")
app.add_typer(bench.app, name="bench")
app.add_typer(keys_cli.app, name="keys")
app.command("demo")(demo.demo)
app.add_typer(service.dealer_app, name="dealer")
app.command("serve")(service.serve)
app.command("query")(service.query)
app.command("train")(train_cli.train)


def main() -> None:
    app()
