"""``veil fl``: federated learning on Flower (simulation and deployment engines)."""

from __future__ import annotations

from pathlib import Path

import typer

from veil.cli.jsonout import dumps

app = typer.Typer(help="Federated learning on Flower: FedAvg/FedProx, SecAgg+, two-server "
                       "secure aggregation, client-level DP.", no_args_is_help=True)

_COLUMNS = ("round", "accuracy", "loss", "bytes_up_per_client", "bytes_down_per_client",
            "server_s", "round_s", "included", "epsilon")



def _config(model, dataset, clients, fraction, rounds, partition, aggregation, local_epochs,
            batch_size, lr, proximal_mu, dp_noise, dp_clip, dp_adaptive, accountant, delta,
            local_dp_noise, train_limit, ring_bits, clipping_range, seed):
    from veil.fl import FLConfig, Task

    task = Task(model=model, dataset=dataset, num_clients=clients, partition=partition,
                local_epochs=local_epochs, batch_size=batch_size, lr=lr, proximal_mu=proximal_mu,
                train_limit=train_limit, local_dp_noise=local_dp_noise, seed=seed)
    return FLConfig(task=task, rounds=rounds, fraction=fraction, aggregation=aggregation,
                    dp_noise=dp_noise, dp_clip=dp_clip, dp_adaptive=dp_adaptive,
                    dp_accountant=accountant, delta=delta, ring_bits=ring_bits,
                    clipping_range=clipping_range)


def _print_round(entry: dict) -> None:
    cells = []
    for k in _COLUMNS:
        if k in entry:
            v = entry[k]
            cells.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    typer.echo("  ".join(cells), err=True)


def plot_history(history: dict, out: Path) -> list[str]:
    """Accuracy vs rounds and (with DP) ε vs rounds as PNG files under ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in history["rounds"]]
    label = history["config"]["aggregation"]
    files = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([0] + rounds, [history["initial"]["accuracy"]] +
            [r["accuracy"] for r in history["rounds"]], marker="o", label=label)
    ax.set_xlabel("round"), ax.set_ylabel("test accuracy"), ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    files.append(str(out / "accuracy.png"))
    plt.close(fig)
    if any("epsilon" in r for r in history["rounds"]):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(rounds, [r.get("epsilon", float("nan")) for r in history["rounds"]], marker="o")
        ax.set_xlabel("round"), ax.set_ylabel(f"ε (δ = {history['config']['delta']:g})")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "epsilon.png", dpi=120)
        files.append(str(out / "epsilon.png"))
        plt.close(fig)
    return files


def _finish(history: dict, output: Path | None, as_json: bool) -> None:
    history.pop("final_arrays", None)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        history["plots"] = plot_history(history, output)
        (output / "fl.json").write_text(dumps(history, indent=1))
    if as_json:
        typer.echo(dumps(history))
    else:
        last = history["rounds"][-1]
        typer.echo(f"final accuracy {last['accuracy']:.4f} after {last['round']} rounds"
                   + (f", ε = {last['epsilon']:.3g}" if "epsilon" in last else "")
                   + (f"; report in {output}" if output else ""))


_OPTS = dict(
    model=typer.Option("lenet", "--model", help="mlp or a zoo model (lenet, network1, ...)."),
    dataset=typer.Option("mnist", "--dataset", help="mnist, cifar10 or digits."),
    clients=typer.Option(10, "--clients", help="Number of clients (SuperNodes)."),
    fraction=typer.Option(1.0, "--fraction",
                          help="Fraction of clients per round (DP: Poisson rate q)."),
    rounds=typer.Option(5, "--rounds"),
    partition=typer.Option("iid", "--partition", help="iid or dirichlet:<alpha>."),
    aggregation=typer.Option("plain", "--aggregation", help="plain, secagg+ or two-server."),
    local_epochs=typer.Option(1, "--local-epochs"),
    batch_size=typer.Option(32, "--batch-size"),
    lr=typer.Option(0.05, "--lr"),
    proximal_mu=typer.Option(0.0, "--proximal-mu", help="FedProx μ (0: FedAvg)."),
    dp_noise=typer.Option(0.0, "--dp-noise", help="Client-level DP noise multiplier z (0: off)."),
    dp_clip=typer.Option(1.0, "--dp-clip", help="Client update clipping norm C."),
    dp_adaptive=typer.Option(False, "--dp-adaptive", help="Adaptive clipping (plain aggregation)."),
    accountant=typer.Option("rdp", "--accountant", help="rdp or pld."),
    delta=typer.Option(1e-5, "--delta"),
    local_dp_noise=typer.Option(0.0, "--local-dp-noise",
                                help="DP-SGD at each client (noise multiplier)."),
    train_limit=typer.Option(None, "--train-limit", help="Use only the first N training images."),
    ring_bits=typer.Option(32, "--ring-bits", help="Two-server ring: 32 or 64."),
    clipping_range=typer.Option(8.0, "--clipping-range", help="SecAgg+ clipping range."),
    seed=typer.Option(0, "--seed"),
    output=typer.Option(None, "--output", help="Directory for fl.json and the plots."),
    as_json=typer.Option(False, "--json", help="Print the history as JSON."),
)


@app.command("simulate")
def simulate_cmd(
    model: str = _OPTS["model"], dataset: str = _OPTS["dataset"], clients: int = _OPTS["clients"],
    fraction: float = _OPTS["fraction"], rounds: int = _OPTS["rounds"],
    partition: str = _OPTS["partition"], aggregation: str = _OPTS["aggregation"],
    local_epochs: int = _OPTS["local_epochs"], batch_size: int = _OPTS["batch_size"],
    lr: float = _OPTS["lr"], proximal_mu: float = _OPTS["proximal_mu"],
    dp_noise: float = _OPTS["dp_noise"], dp_clip: float = _OPTS["dp_clip"],
    dp_adaptive: bool = _OPTS["dp_adaptive"], accountant: str = _OPTS["accountant"],
    delta: float = _OPTS["delta"], local_dp_noise: float = _OPTS["local_dp_noise"],
    train_limit: int | None = _OPTS["train_limit"], ring_bits: int = _OPTS["ring_bits"],
    clipping_range: float = _OPTS["clipping_range"], seed: int = _OPTS["seed"],
    output: Path | None = _OPTS["output"], as_json: bool = _OPTS["as_json"],
) -> None:
    """Run a federation in Flower's simulation engine (Ray), one line per round."""
    try:
        cfg = _config(model, dataset, clients, fraction, rounds, partition, aggregation,
                      local_epochs, batch_size, lr, proximal_mu, dp_noise, dp_clip, dp_adaptive,
                      accountant, delta, local_dp_noise, train_limit, ring_bits, clipping_range,
                      seed)
        from veil.fl import simulate
        history = simulate(cfg, progress=_print_round)
    except (ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _finish(history, output, as_json)


@app.command("deploy")
def deploy_cmd(
    model: str = _OPTS["model"], dataset: str = _OPTS["dataset"], clients: int = _OPTS["clients"],
    fraction: float = _OPTS["fraction"], rounds: int = _OPTS["rounds"],
    partition: str = _OPTS["partition"], aggregation: str = _OPTS["aggregation"],
    local_epochs: int = _OPTS["local_epochs"], batch_size: int = _OPTS["batch_size"],
    lr: float = _OPTS["lr"], proximal_mu: float = _OPTS["proximal_mu"],
    dp_noise: float = _OPTS["dp_noise"], dp_clip: float = _OPTS["dp_clip"],
    dp_adaptive: bool = _OPTS["dp_adaptive"], accountant: str = _OPTS["accountant"],
    delta: float = _OPTS["delta"], local_dp_noise: float = _OPTS["local_dp_noise"],
    train_limit: int | None = _OPTS["train_limit"], ring_bits: int = _OPTS["ring_bits"],
    clipping_range: float = _OPTS["clipping_range"], seed: int = _OPTS["seed"],
    output: Path | None = _OPTS["output"], as_json: bool = _OPTS["as_json"],
    workdir: Path | None = typer.Option(None, "--workdir",
                                        help="App, logs and state (default: a temp dir)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the federation."),
) -> None:
    """Run a federation on Flower's deployment engine: a SuperLink and one SuperNode per
    client as separate processes on loopback (see docs/fl.md for TLS across machines)."""
    try:
        cfg = _config(model, dataset, clients, fraction, rounds, partition, aggregation,
                      local_epochs, batch_size, lr, proximal_mu, dp_noise, dp_clip, dp_adaptive,
                      accountant, delta, local_dp_noise, train_limit, ring_bits, clipping_range,
                      seed)
        from veil.fl.deploy import deploy
        history = deploy(cfg, workdir=workdir, timeout=timeout)
    except (ValueError, RuntimeError, TimeoutError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for entry in history["rounds"]:
        _print_round(entry)
    _finish(history, output, as_json)
