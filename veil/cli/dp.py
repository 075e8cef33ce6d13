"""``veil dp``: privacy accounting (DP-SGD and DP-SGLD) and private training."""

from __future__ import annotations

from pathlib import Path

import typer

from veil.cli.jsonout import dumps

app = typer.Typer(help="Differential privacy: ε of DP-SGD / DP-SGLD, private training.",
                  no_args_is_help=True)


def _emit(as_json: bool, payload: dict, text: str) -> None:
    if as_json:
        typer.echo(dumps(payload))
    else:
        from rich.console import Console

        Console().print(text)


@app.command("epsilon")
def epsilon_cmd(
    sigma: float = typer.Option(..., "--sigma", help="Noise multiplier σ (std / clip norm)."),
    sample_rate: float = typer.Option(..., "--sample-rate", help="Poisson sampling rate q."),
    steps: int = typer.Option(..., "--steps", help="Number of noisy steps K."),
    delta: float = typer.Option(..., "--delta", help="Target δ."),
    accountant: str = typer.Option("rdp", "--accountant", help="rdp or pld."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """ε of DP-SGD: K steps of the Poisson-subsampled Gaussian mechanism."""
    from veil.dp.accountants import make_accountant

    try:
        if not sigma > 0:
            raise ValueError(f"--sigma must be > 0 (σ = 0 gives no privacy: ε = ∞), got {sigma}")
        acc = make_accountant(accountant)
        acc.step(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)
        eps = acc.get_epsilon(delta)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _emit(as_json, {"epsilon": eps, "delta": delta, "accountant": accountant, "sigma": sigma,
                    "sample_rate": sample_rate, "steps": steps},
          f"ε = {eps:.4f}  (δ={delta:g}, {accountant.upper()}, σ={sigma:g}, q={sample_rate:g}, "
          f"K={steps})")


@app.command("sgld-epsilon")
def sgld_epsilon_cmd(
    lipschitz: float = typer.Option(..., "--lipschitz", help="L: Lipschitz constant of the loss."),
    strong_convexity: float = typer.Option(..., "--strong-convexity", help="λ."),
    smoothness: float = typer.Option(..., "--smoothness", help="β (η < 1/β is checked)."),
    n: int = typer.Option(..., "--n", help="Dataset size."),
    sigma: float = typer.Option(..., "--sigma", help="σ (temperature σ²)."),
    lr: float = typer.Option(..., "--lr", help="Step size η."),
    steps: int = typer.Option(..., "--steps", help="Number of UPDATES K (not epochs)."),
    delta: float = typer.Option(..., "--delta", help="Target δ."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """ε of DP-SGLD with hidden intermediate iterates (only the last one released)."""
    from veil.dp.sgld import AssumptionError, sgld_epsilon

    try:
        eps, alpha = sgld_epsilon(delta, lipschitz=lipschitz, strong_convexity=strong_convexity,
                                  n=n, sigma=sigma, lr=lr, steps=steps, smoothness=smoothness)
        eps_inf, _ = sgld_epsilon(delta, lipschitz=lipschitz, strong_convexity=strong_convexity,
                                  n=n, sigma=sigma, lr=1.0, steps=10**9)
    except (AssumptionError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _emit(as_json, {"epsilon": eps, "delta": delta, "alpha": alpha,
                    "epsilon_limit": eps_inf, "steps": steps},
          f"ε = {eps:.4f}  (δ={delta:g}, best α={alpha:.2f}; limit as K→∞: {eps_inf:.4f})")


@app.command("train")
def train_cmd(
    method: str = typer.Option("dp-sgd", "--method", help="dp-sgd or dp-sgld."),
    dataset: str = typer.Option("mnist", "--dataset", help="mnist, cifar10 or digits."),
    epsilon: float = typer.Option(3.0, "--epsilon", help="Target ε (σ is calibrated)."),
    delta: float = typer.Option(1e-5, "--delta", help="Target δ."),
    epochs: int = typer.Option(3, "--epochs", help="Epochs (DP-SGD); DP-SGLD: epochs·n/b updates."),
    batch_size: int = typer.Option(256, "--batch-size", help="Expected (logical) batch size."),
    physical_batch_size: int = typer.Option(
        0, "--physical-batch-size", help="Split logical batches (virtual batches); 0 = off."),
    max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="Clipping norm C (DP-SGD)."),
    lr: float = typer.Option(0.0, "--lr", help="Learning rate (0 = method default)."),
    l2: float = typer.Option(0.003, "--l2", help="λ, L2 regularisation (DP-SGLD)."),
    accountant: str = typer.Option("rdp", "--accountant", help="rdp or pld (DP-SGD)."),
    limit: int = typer.Option(0, "--limit", help="Use only the first N training examples."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the report as JSON here."),
    as_json: bool = typer.Option(False, "--json", help="Print the final report as JSON."),
) -> None:
    """Train on a built-in dataset with DP-SGD (CNN) or DP-SGLD (logistic regression)."""
    from rich.console import Console

    console = Console(stderr=as_json)
    train, test = _dataset(dataset, limit or None)
    n = len(train[1])
    if method == "dp-sgd":
        report = _train_sgd(train, test, dataset, epsilon=epsilon, delta=delta, epochs=epochs,
                            batch_size=batch_size, physical=physical_batch_size,
                            max_grad_norm=max_grad_norm, lr=lr or (2.0 if dataset != "cifar10"
                                                                   else 1.0),
                            accountant=accountant, console=console)
    elif method == "dp-sgld":
        report = _train_sgld(train, test, epsilon=epsilon, delta=delta,
                             steps=max(1, epochs * n // batch_size), batch_size=batch_size,
                             l2=l2, lr=lr or None, console=console)
    else:
        typer.echo("error: --method must be dp-sgd or dp-sgld", err=True)
        raise typer.Exit(2)
    report.update(method=method, dataset=dataset, n=n, delta=delta)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(dumps(report, indent=2))
    if as_json:
        typer.echo(dumps(report))
    else:
        from rich.table import Table

        table = Table(title=f"{method} on {dataset} (n={n})")
        table.add_column("metric")
        table.add_column("value")
        for k in ("epsilon", "delta", "test_accuracy", "noise", "steps", "seconds"):
            if k in report:
                v = report[k]
                table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
        console.print(table)


def _dataset(name: str, limit: int | None):
    import torch

    if name == "mnist":
        from veil.data import mnist_tensors

        return mnist_tensors("train", limit), mnist_tensors("test")
    if name == "cifar10":
        from veil.data import cifar10_tensors

        return cifar10_tensors("train", limit), cifar10_tensors("test")
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
        y = torch.tensor(d.target, dtype=torch.long)
        cut = 1400 if limit is None else min(limit, 1400)
        return (x[:cut], y[:cut]), (x[1400:], y[1400:])
    typer.echo(f"error: unknown dataset {name!r} (mnist, cifar10, digits)", err=True)
    raise typer.Exit(2)


def _train_sgd(train, test, dataset, *, epsilon, delta, epochs, batch_size, physical,
               max_grad_norm, lr, accountant, console) -> dict:
    import time

    import torch
    from torch.utils.data import TensorDataset

    from veil.dp.models import cifar_cnn, linear_probe, mnist_cnn
    from veil.dp.training import train_dp_sgd

    model = {"mnist": mnist_cnn, "cifar10": cifar_cnn}.get(dataset, lambda: linear_probe(64))()
    t0 = time.perf_counter()
    res = train_dp_sgd(
        model, TensorDataset(*train), TensorDataset(*test), epochs=epochs,
        batch_size=min(batch_size, len(train[1])), delta=delta, max_grad_norm=max_grad_norm,
        lr=lr, target_epsilon=epsilon, accountant=accountant,
        max_physical_batch_size=physical or None, progress=console.is_terminal,
        on_epoch=lambda r: console.print(
            f"epoch {r.epoch}: loss {r.loss:.3f}  train acc {r.train_accuracy:.3f}  "
            f"test acc {r.test_accuracy:.4f}  ε {r.epsilon:.3f}  ({r.seconds:.1f} s)"),
    )
    del torch
    return {"epsilon": res.epsilon, "test_accuracy": res.epochs[-1].test_accuracy,
            "noise": res.noise_multiplier, "sample_rate": res.sample_rate, "steps": res.steps,
            "accountant": accountant, "seconds": time.perf_counter() - t0,
            "epochs": [r.__dict__ for r in res.epochs]}


def _train_sgld(train, test, *, epsilon, delta, steps, batch_size, l2, lr, console) -> dict:
    import time

    from rich.progress import Progress

    from veil.dp.sgld import DPLogisticRegression

    x, y = train[0].flatten(1), train[1]
    clf = DPLogisticRegression(10, l2=l2, epsilon=epsilon, delta=delta, lr=lr)
    t0 = time.perf_counter()
    with Progress(disable=not console.is_terminal, console=console) as bar:
        task = bar.add_task("DP-SGLD", total=steps)
        clf.fit(x.numpy(), y.numpy(), steps=steps, batch_size=min(batch_size, len(y)),
                progress=lambda k, loss: bar.update(task, advance=1,
                                                    description=f"DP-SGLD loss {loss:.3f}"))
    acc = clf.score(test[0].flatten(1).numpy(), test[1].numpy())
    return {"epsilon": clf.epsilon_spent(delta), "test_accuracy": acc, "noise": clf.sigma,
            "steps": steps, "l2": l2, "lipschitz": clf.lipschitz, "smoothness": clf.smoothness,
            "lr": clf.lr, "seconds": time.perf_counter() - t0}
