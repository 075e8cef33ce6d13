"""``veil bench``: run a benchmark from ``veil.bench``, print its table, optionally write JSON."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

app = typer.Typer(help="Benchmarks: print a table, write JSON (compare with peers as ratios).",
                  no_args_is_help=True)

BENCHMARKS = ("mpc", "fss", "inference", "dp_sgd", "dp_langevin", "attacks", "fe")


def _run(name: str, json_out: bool, output: Path | None, quick: bool) -> None:
    module = importlib.import_module(f"veil.bench.{name}")
    module.main(json_stdout=json_out, output=output, quick=quick)


def _make(name: str):
    def command(
        json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
        output: Path = typer.Option(None, "--output", "-o", help="Write the JSON here."),
        quick: bool = typer.Option(False, "--quick", help="Smaller sizes, for a smoke run."),
    ) -> None:
        _run(name, json_out, output, quick)

    command.__doc__ = f"Run the {name} benchmark (see bench/{name}.py)."
    return command


for _name in BENCHMARKS:
    app.command(_name.replace("_", "-"))(_make(_name))
