"""``veil bench``: run a benchmark from ``veil.bench``, print its table, optionally write JSON.

Every benchmark module exposes ``main(json_stdout, output, quick, **extra)``; the scripts
under ``bench/`` call the same functions.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

app = typer.Typer(help="Benchmarks: print a table, write JSON (compare with peers as ratios).",
                  no_args_is_help=True)

BENCHMARKS = ("mpc", "fss", "inference", "dp_sgd", "dp_langevin", "attacks", "fe", "service",
              "training", "he", "fl")

JSON_OPT = typer.Option(False, "--json", help="Print the results as JSON.")
OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Write the JSON here.")
QUICK_OPT = typer.Option(False, "--quick", help="Smaller sizes, for a smoke run (written to "
                         "bench/results/quick/ unless --output is given: the published "
                         "results are never replaced by a smoke run).")


def _run(name: str, json_out: bool, output: Path | None, quick: bool, **extra) -> None:
    from veil.bench.output import output_for

    module = importlib.import_module(f"veil.bench.{name}")
    module.main(json_stdout=json_out, output=output_for(name, output, quick), quick=quick,
                **extra)


def _make(name: str):
    def command(json_out: bool = JSON_OPT, output: Path = OUTPUT_OPT,
                quick: bool = QUICK_OPT) -> None:
        _run(name, json_out, output, quick)

    command.__doc__ = f"Run the {name.replace('_', '-')} benchmark (bench/{name}.py)."
    return command


for _name in BENCHMARKS:
    if _name not in ("inference", "fe"):
        app.command(_name.replace("_", "-"))(_make(_name))


@app.command("inference")
def inference_cmd(
    json_out: bool = JSON_OPT, output: Path = OUTPUT_OPT, quick: bool = QUICK_OPT,
    models: str = typer.Option(None, help="Comma-separated zoo names, e.g. lenet,alexnet."),
    fresh: bool = typer.Option(False, "--fresh", help="Measure again instead of resuming."),
    crypten: bool = typer.Option(True, help="Run CrypTen side by side when installed."),
    transport: str = typer.Option("tcp", help="tcp or local."),
) -> None:
    """Run the private-inference benchmark: the AriaNN zoo vs CrypTen and plaintext."""
    _run("inference", json_out, output, quick,
         models=models.split(",") if models else None, resume=not fresh, crypten=crypten,
         transport=transport)


@app.command("fe")
def fe_cmd(
    json_out: bool = JSON_OPT, output: Path = OUTPUT_OPT, quick: bool = QUICK_OPT,
    full: bool = typer.Option(False, "--full", help="Encrypt the whole MNIST test set."),
    images: int = typer.Option(None, help="Number of encrypted test images."),
) -> None:
    """Run the functional-encryption benchmark (timings, sizes, accuracy table)."""
    _run("fe", json_out, output, quick, full=full, images=images)


@app.command("all")
def all_cmd(quick: bool = QUICK_OPT) -> None:
    """Run every benchmark in turn; each writes its JSON under bench/results/."""
    for name in BENCHMARKS:
        typer.echo(f"\n=== {name} ===")
        _run(name, False, None, quick)
