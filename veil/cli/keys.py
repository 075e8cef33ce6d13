"""``veil keys``: a deployment's credentials (private CA + one certificate per role).

Examples
--------
``veil keys init keys/`` writes ``ca.pem``, ``ca.key`` and ``party0``, ``party1``,
``dealer`` certificates and keys (private keys mode 0600); copy ``ca.pem`` and one
role's ``.pem``/``.key`` to that role's host (docs/security.md). ``veil keys show keys/``
checks a directory and prints each role's expiry.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Credentials for multi-host runs: a private CA and one certificate "
                       "per role (mutual TLS 1.3).", no_args_is_help=True)


@app.command("init")
def init(
    directory: Path = typer.Argument(..., help="Directory to create the credentials in."),
    days: int = typer.Option(365, min=1, help="Validity of the certificates, in days."),
    force: bool = typer.Option(False, "--force", help="Replace existing credentials."),
) -> None:
    """Create a new deployment: CA, and a certificate + key for party0, party1 and the dealer."""
    from veil.comm.credentials import ROLES, CredentialsError, init_keys

    try:
        written = init_keys(directory, days=days, overwrite=force)
    except CredentialsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"Copy ca.pem plus <role>.pem and <role>.key to each host ({', '.join(ROLES)}); "
               "keep ca.key offline.")


@app.command("show")
def show(directory: Path = typer.Argument(..., help="A keys directory.")) -> None:
    """Check the credentials present in a directory and print when each expires."""
    from veil.comm.credentials import ROLES, Credentials, CredentialsError

    found = 0
    for role in ROLES:
        if not (directory / f"{role}.key").exists():
            continue
        found += 1
        try:
            creds = Credentials.load(directory, role)
        except CredentialsError as exc:
            typer.echo(f"{role}: INVALID: {exc}")
            raise typer.Exit(1) from None
        typer.echo(f"{role}: valid until {creds.expires:%Y-%m-%d %H:%M} UTC")
    if not found:
        typer.echo(f"error: no role key (party0.key, party1.key, dealer.key) in {directory}",
                   err=True)
        raise typer.Exit(1)
