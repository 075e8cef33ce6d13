"""What every benchmark does with its results: write JSON, then print JSON or a table.

Also the command line shared by the thin scripts under ``bench/``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
    main(json_stdout=ns.json, output=ns.output, quick=ns.quick)
