"""What every benchmark does with its results: write JSON, then print JSON or a table.

Also the command line shared by the thin scripts under ``bench/``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Where quick (smoke) runs write when no ``--output`` is given: never over the published
#: ``bench/results/NAME.json``, which only a full run (or an explicit ``--output``) replaces.
QUICK_DIR = Path("bench/results/quick")


def output_for(name: str, output: Path | None, quick: bool) -> Path | None:
    """The ``output`` a benchmark run should get: a quick run without one goes to
    ``bench/results/quick/NAME.json``; otherwise ``output`` (None: the published file).

    Example
    -------
    >>> str(output_for("mpc", None, quick=True))
    'bench/results/quick/mpc.json'
    >>> output_for("mpc", None, quick=False) is None
    True
    """
    if output is not None or not quick:
        return output
    return QUICK_DIR / f"{name}.json"


def publish(results: dict[str, Any], path: Path, json_stdout: bool,
            print_table: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Write ``results`` to ``path`` as JSON; print them as JSON or through ``print_table``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    if json_stdout:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
        print(f"results written to {path}")
    return results


def script_arguments(description: str | None) -> argparse.ArgumentParser:
    """The options every ``bench/NAME.py`` script takes: ``--json``, ``--output``, ``--quick``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--output", "-o", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    return parser


def run_script(main: Callable[..., Any], description: str | None) -> None:
    """Parse the standard options and call a benchmark's ``main``."""
    ns = script_arguments(description).parse_args()
    name = main.__module__.rsplit(".", 1)[-1]
    main(json_stdout=ns.json, output=output_for(name, ns.output, ns.quick), quick=ns.quick)
