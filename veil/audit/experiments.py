"""The reference experiments behind ``veil attack ...`` and ``veil bench attacks``.

Each experiment runs an attack end to end on real data and returns a JSON-ready
report, writing its figures (PNG) to an output folder:

* :func:`membership_experiment` — threshold, shadow-model and LiRA attacks against an
  overfit target (CIFAR-10 MLP), a well-generalised one (MNIST MLP with weight decay)
  and a DP-SGD one (the overfit recipe trained with :mod:`veil.dp`), each on a pool of
  which a random half is the target's training set; 16 shadow models per target.
* :func:`inversion_experiment` — Fredrikson model inversion of every MNIST class, white
  box, black box, and black box against rounded confidences.
* :func:`gradient_experiment` — gradient inversion on MNIST: DLG vs Inverting Gradients,
  batch size, trained vs untrained model, FedSGD vs FedAvg, DP noise, aggregation; and
  the TV weight tuned separately for MNIST and CIFAR-10.

``quick=True`` shrinks every experiment to a few minutes on 2 CPU cores.

Example
-------
>>> from veil.audit.experiments import membership_experiment    # doctest: +SKIP
>>> report = membership_experiment("out/membership", quick=True)   # doctest: +SKIP
>>> report["attacks"]["lira"]["tpr_at_1%_fpr"]                      # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from veil.attacks import gradient_inversion as gi
from veil.attacks.inversion import invert_class, invert_class_blackbox, similarity_to_mean
from veil.attacks.membership import hflip, identity, run_attacks, shift
from veil.attacks.scores import ScoreOracle
from veil.audit.plots import image_grid, roc_plot
from veil.audit.targets import (
    Recipe,
    accuracy,
    load_dataset,
    pixel_range,
    to_unit,
    train,
    train_fn,
)

Tracker = Callable[[str, int], Callable[[int], None]]
"""``tracker(description, total) -> advance(n)``: a progress-bar factory (or a no-op)."""


def _no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n=1: None


# --------------------------------------------------------------------------- membership


@dataclass(frozen=True)
class MembershipTarget:
    """One target of the membership experiment: data pool, recipe, LiRA augmentations."""

    name: str
    dataset: str
    pool: int
    recipe: Recipe
    augmentations: tuple = (identity,)
    description: str = ""
    dp_epsilon: float | None = None
    """With a DP recipe: calibrate the noise multiplier to this epsilon (delta 1e-5)."""


def membership_targets(quick: bool = False) -> list[MembershipTarget]:
    """The reference targets (``quick``: smaller pools and models, fewer epochs)."""
    overfit = Recipe(arch="mlp", hidden=128, epochs=20, batch_size=128, lr=1e-3)
    general = Recipe(arch="mlp", hidden=128, epochs=4 if quick else 5, batch_size=64, lr=1e-3,
                     weight_decay=5e-4)
    # DP-SGD: the overfit task with per-example clipping and noise calibrated to epsilon = 8
    # (SGD with momentum; expected batch 10% of the training set).
    pool = 1000 if quick else 5000
    dp = Recipe(arch="mlp", hidden=overfit.hidden, epochs=overfit.epochs, batch_size=pool // 20,
                lr=0.5, optimizer="sgd", dp_noise=1.0, dp_clip=1.0)
    cifar_aug = (identity, hflip)
    mnist_aug = (identity, shift(1, 0), shift(-1, 0))
    return [
        MembershipTarget("overfit", "cifar10", 1000 if quick else 5000, overfit, cifar_aug,
                         "CIFAR-10 MLP, no regularisation: train accuracy ~100%"),
        MembershipTarget("generalised", "mnist", 2000 if quick else 10000, general, mnist_aug,
                         "MNIST MLP, weight decay, few epochs: small train-test gap"),
        MembershipTarget("dp", "cifar10", pool, dp, cifar_aug,
                         "the overfit task trained with DP-SGD (veil.dp), epsilon 8",
                         dp_epsilon=8.0),
    ]


def membership_experiment(out_dir: str | Path, quick: bool = False, num_shadows: int | None = None,
                          targets: tuple[str, ...] = ("overfit", "generalised", "dp"),
                          seed: int = 0, tracker: Tracker = _no_progress) -> dict:
    """Attack each reference target with every membership-inference attack.

    Returns ``{"attacks": <the overfit target's results>, "targets": {name: report}}``
    where each report holds the target's accuracies, recipe, the attacks' AUC,
    balanced accuracy, TPR at 0.1% and 1% FPR (``None`` with a note where the pool has
    too few non-members), and timings. One log-log ROC figure per target.
    """
    out_dir = Path(out_dir)
    shadows = num_shadows if num_shadows is not None else (8 if quick else 16)
    report: dict = {"experiment": "membership", "quick": quick, "num_shadows": shadows,
                    "targets": {}}
    for t in membership_targets(quick):
        if t.name not in targets:
            continue
        report["targets"][t.name] = _membership_target(t, out_dir, shadows, seed, tracker)
    first = next((v for v in report["targets"].values() if "attacks" in v), None)
    report["attacks"] = first["attacks"] if first else {}
    return report


def membership_of_model(model: torch.nn.Module, members: np.ndarray, out_dir: str | Path,
                        dataset: str = "cifar10", recipe: str = "overfit",
                        num_shadows: int = 16, seed: int = 0,
                        tracker: Tracker = _no_progress) -> dict:
    """Attack a user's trained classifier whose training set is known.

    Parameters
    ----------
    model: the target (only its scores are used).
    members: booleans over the first ``len(members)`` training examples of ``dataset``
        (the pool): which ones the model trained on.
    recipe: the reference recipe (``overfit``, ``generalised`` or ``dp``) the shadow
        models use to imitate the target; choose the closest to how it was trained.
    """
    members = np.asarray(members)
    if members.dtype != bool or members.ndim != 1:
        raise ValueError("members must be a 1-D boolean mask over the pool")
    if members.all() or not members.any():
        raise ValueError("the pool needs both members and non-members")
    by_name = {t.name: t for t in membership_targets()}
    if recipe not in by_name:
        raise ValueError(f"recipe must be one of {sorted(by_name)}")
    t = replace(by_name[recipe], name="model", dataset=dataset, pool=len(members),
                description=f"user model, shadows with the {recipe} recipe")
    augment = {"cifar10": (identity, hflip), "mnist": (identity, shift(1, 0), shift(-1, 0))}
    t = replace(t, augmentations=augment.get(dataset, (identity,)))
    report = {"experiment": "membership", "num_shadows": num_shadows, "targets": {
        "model": _membership_target(t, Path(out_dir), num_shadows, seed, tracker,
                                    target=model, members=members)}}
    report["attacks"] = report["targets"]["model"]["attacks"]
    return report


def _membership_target(t: MembershipTarget, out_dir: Path, shadows: int, seed: int,
                       tracker: Tracker, target: torch.nn.Module | None = None,
                       members: np.ndarray | None = None) -> dict:
    if t.dp_epsilon is not None:
        from veil.audit.dp_training import calibrate
        t = replace(t, recipe=calibrate(t.recipe, t.pool // 2, t.dp_epsilon, delta=1e-5))
    x, y = load_dataset(t.dataset, "train", limit=t.pool)
    if len(x) < t.pool:
        raise ValueError(f"{t.dataset} has only {len(x)} training examples, not {t.pool}")
    xt, yt = load_dataset(t.dataset, "test", limit=2000)
    if members is None:
        rng = np.random.default_rng(seed)
        members = np.zeros(len(x), dtype=bool)
        members[rng.permutation(len(x))[: len(x) // 2]] = True
    fit = train_fn(t.recipe, x, y, num_classes=10, seed=seed + 1)
    t0 = time.perf_counter()
    if target is None:
        target = fit(np.flatnonzero(members))
    train_seconds = time.perf_counter() - t0
    advance = tracker(f"{t.name}: {shadows} shadow models", shadows)
    rep = run_attacks(ScoreOracle(target), x, y, members, fit, num_shadows=shadows,
                      augmentations=t.augmentations, seed=seed + 2, progress=advance)
    fig = roc_plot({k: rep.results[k] for k in ("threshold", "shadow", "lira", "lira_offline")},
                   out_dir / f"roc_{t.name}.png", title=f"{t.name} target ({t.dataset})")
    out = {
        "description": t.description, "dataset": t.dataset, "pool": len(x),
        "members": int(members.sum()), "recipe": t.recipe.to_dict(),
        "augmentations": [getattr(a, "__name__", str(a)) for a in t.augmentations],
        "train_accuracy": accuracy(target, x[members], y[members]),
        "test_accuracy": accuracy(target, xt, yt),
        "seconds": {"train_target": train_seconds, **rep.seconds},
        "attacks": {k: v.to_dict() for k, v in rep.results.items()}, "figure": fig.name,
    }
    if t.recipe.dp_noise is not None:
        from veil.audit.dp_training import epsilon_for
        out["dp_epsilon"] = epsilon_for(t.recipe, int(members.sum()), delta=1e-5)
    return out


# --------------------------------------------------------------------------- model inversion


def load_model(path: str | Path) -> torch.nn.Module:
    """A saved classifier: a whole pickled module (``torch.save(model, path)``), a
    ``torch.export`` program (``.pt2``) or a TorchScript archive
    (:func:`veil.audit.audit.load_user_model`; a one-line ``ModelLoadError`` otherwise).

    Unpickling runs code from the file: only load models you trust.
    """
    from veil.audit.audit import load_user_model
    return load_user_model(path)


def inversion_experiment(out_dir: str | Path, quick: bool = False, dataset: str = "mnist",
                         model: torch.nn.Module | None = None,
                         rounding: tuple[int, ...] = (3, 2, 1),
                         classes: tuple[int, ...] | None = None, seed: int = 0,
                         tracker: Tracker = _no_progress) -> dict:
    """Invert every class of a classifier, white box and black box (with rounded scores).

    Without ``model`` an MLP is trained on a subset of ``dataset`` first. Per class and
    mode the report gives the model's confidence and top class on the reconstruction,
    and its correlation/SSIM to the class's mean training image, next to the best
    correlation with any *other* class mean (a reconstruction is class-specific when
    the first beats the second). One image grid: class means, then one row per mode.
    ``classes`` restricts the attack to some classes (default: all).
    """
    out_dir = Path(out_dir)
    x, y = load_dataset(dataset, "train", limit=2000 if quick else 10000)
    num_classes = int(y.max()) + 1
    targets = list(range(num_classes)) if classes is None else sorted(set(classes))
    if not targets or min(targets) < 0 or max(targets) >= num_classes:
        raise ValueError(f"classes must be in [0, {num_classes})")
    report: dict = {"experiment": "inversion", "dataset": dataset, "quick": quick}
    if model is None:
        recipe = Recipe(arch="mlp", hidden=128, epochs=5, weight_decay=1e-4, seed=seed)
        model = train(recipe, x, y, num_classes)
        report["model"] = {"recipe": recipe.to_dict(), "train_examples": len(x)}
    else:
        report["model"] = {"provided": True}
    xt, yt = load_dataset(dataset, "test", limit=2000)
    report["model"]["test_accuracy"] = accuracy(model, xt, yt)
    shape = tuple(x.shape[1:])
    bounds = pixel_range(dataset)
    means = torch.stack([to_unit(dataset, x[y == c].mean(0, keepdim=True))[0]
                         for c in range(num_classes)])
    max_iter = 150 if quick else 300
    directions = 25 if quick else 50
    modes: list[tuple[str, Callable[[int], object]]] = [
        ("white-box", lambda c: invert_class(model, c, shape, bounds=bounds, max_iter=max_iter)),
        ("black-box", lambda c: invert_class_blackbox(ScoreOracle(model), c, shape, bounds=bounds,
                                                      max_iter=max_iter, directions=directions,
                                                      seed=seed + c)),
    ]
    for r in rounding:
        modes.append((f"black-box, rounded {r}dp",
                      lambda c, r=r: invert_class_blackbox(
                          ScoreOracle(model, round_to=r), c, shape, bounds=bounds,
                          max_iter=max_iter, directions=directions, seed=seed + c)))
    advance = tracker("model inversion", len(modes) * len(targets))
    rows = [("class mean", means[targets])]
    report["modes"] = {}
    for name, run in modes:
        t0 = time.perf_counter()
        per_class, images = [], []
        for c in targets:
            res = run(c)
            img = to_unit(dataset, res.image[None])[0]
            sim = similarity_to_mean(img, means[c])
            others = [similarity_to_mean(img, means[o])["correlation"]
                      for o in range(num_classes) if o != c]
            per_class.append({"class": c, "confidence": res.confidence,
                              "predicted": res.predicted, "recognised": res.predicted == c,
                              **sim, "best_other_correlation": max(others),
                              "iterations": res.iterations, "queries": res.queries})
            images.append(img)
            advance(1)
        rows.append((name.replace(", ", "\n"), torch.stack(images)))
        report["modes"][name] = {
            "seconds": time.perf_counter() - t0,
            "recognised": sum(p["recognised"] for p in per_class) / len(targets),
            "mean_confidence": float(np.mean([p["confidence"] for p in per_class])),
            "mean_correlation": float(np.mean([p["correlation"] for p in per_class])),
            "closest_to_own_class": sum(p["correlation"] > p["best_other_correlation"]
                                        for p in per_class) / len(targets),
            "classes": per_class,
        }
    fig = image_grid(rows, out_dir / "inversion.png", [str(c) for c in targets])
    report["figure"] = fig.name
    return report


# --------------------------------------------------------------------------- gradient inversion

TV_CANDIDATES = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)


def gradient_experiment(out_dir: str | Path, quick: bool = False, dataset: str = "mnist",
                        model: torch.nn.Module | None = None, seed: int = 0,
                        tracker: Tracker = _no_progress) -> dict:
    """Gradient inversion under each defence, plus the TV weight per dataset.

    The attacked model is a small untrained CNN (and the same CNN after 2 epochs for
    the "trained model" scenario), or ``model`` if given (a classifier for
    ``dataset``; the trained/untrained comparison is then skipped).

    Every scenario attacks the update of fresh client images with Inverting Gradients
    (labels recovered from the update unless said otherwise) and reports PSNR/SSIM of
    the best-matched reconstructions, label-recovery accuracy and time; DLG runs on the
    baseline for comparison. One grid per scenario (originals above reconstructions).
    """
    out_dir = Path(out_dir)
    its = 200 if quick else 1000
    restarts = 1
    report: dict = {"experiment": "gradient", "quick": quick, "iterations": its,
                    "restarts": restarts, "dataset": dataset,
                    "model": "ConvNet(width 8)" if model is None else "provided",
                    "scenarios": {}}
    gen = torch.Generator().manual_seed(seed)

    # TV weight per dataset: tuned on public images (the attacker's own data).
    report["tv_weight"] = {}
    tv = {}
    datasets = (dataset,) if quick else tuple(dict.fromkeys((dataset, "mnist", "cifar10")))
    advance = tracker("tuning TV weight", len(datasets) * len(TV_CANDIDATES))
    for name in datasets:
        xp, yp = load_dataset(name, "test", limit=2)
        torch.manual_seed(seed)
        probe = model if (model is not None and name == dataset) else gi_model(name)
        best, scores = gi.tune_tv_weight(
            probe, xp[:1], yp[:1], lambda z, n=name: to_unit(n, z), TV_CANDIDATES,
            iterations=its, restarts=1, bounds=pixel_range(name), seed=seed)
        advance(len(TV_CANDIDATES))
        tv[name] = best
        report["tv_weight"][name] = {"chosen": best, "psnr_by_weight": {str(k): v for k, v in
                                                                        scores.items()}}

    x, y = load_dataset(dataset, "train", limit=4000)
    perm = torch.randperm(len(x), generator=gen)
    torch.manual_seed(seed)
    untrained = gi_model(dataset) if model is None else model
    trained = None
    if model is None:
        trained = gi_model(dataset)
        _fit(trained, x[perm[1000:]], y[perm[1000:]], epochs=2)
    victims = perm[:64]
    shape, bounds = tuple(x.shape[1:]), pixel_range(dataset)
    fedavg = gi.UpdateSpec("fedavg", local_steps=4, lr=0.05, local_batch=2)
    scenarios = [
        dict(name="baseline (B=1, untrained, FedSGD)"),
        dict(name="DLG (L-BFGS, L2), B=1", attack="dlg"),
        dict(name="labels known, B=4", batch=4, known_labels=True),
        dict(name="batch 4", batch=4),
        dict(name="trained model, B=1", model="trained"),
        dict(name="FedAvg 4 local steps, B=4", batch=4, spec=fedavg),
        dict(name="DP noise sigma=0.01 (clip 1)", noise=0.01),
        dict(name="DP noise sigma=0.1 (clip 1)", noise=0.1),
        dict(name="aggregate of 4 clients, B=1 each", clients=4),
    ]
    if not quick:
        scenarios[4:4] = [dict(name="batch 16", batch=16)]
        scenarios.append(dict(name="DP noise sigma=1 (clip 1)", noise=1.0))
    if trained is None:
        scenarios = [sc for sc in scenarios if sc.get("model") != "trained"]
        scenarios[0]["name"] = "baseline (B=1, given model, FedSGD)"
    advance = tracker("gradient inversion", len(scenarios))
    for sc in scenarios:
        batch, clients = sc.get("batch", 1), sc.get("clients", 1)
        n = batch * clients
        idx = victims[:n]               # the same first images in every scenario
        xs, ys = x[idx], y[idx]
        net = trained if sc.get("model") == "trained" else untrained
        spec = sc.get("spec", gi.UpdateSpec())
        t0 = time.perf_counter()
        updates = [gi.client_update(net, xs[k * batch:(k + 1) * batch],
                                    ys[k * batch:(k + 1) * batch], spec) for k in range(clients)]
        update = gi.aggregate(updates)
        if "noise" in sc:
            update = gi.dp_noise(update, clip=1.0, noise_multiplier=sc["noise"])
        labels = ys if sc.get("known_labels") else gi.recover_labels(update, n)
        if sc.get("attack") == "dlg":
            rec = gi.dlg(net, update, shape, n, labels=labels, spec=spec,
                         iterations=100 if quick else 300, bounds=bounds, seed=seed)
        else:
            rec = gi.inverting_gradients(net, update, shape, labels, spec, tv_weight=tv[dataset],
                                         iterations=its, restarts=restarts, bounds=bounds,
                                         seed=seed)
        quality = gi.image_quality(to_unit(dataset, xs), to_unit(dataset, rec.images))
        label_acc = _label_accuracy(ys, labels)
        slug = "".join(ch if ch.isalnum() else "_" for ch in sc["name"]).strip("_")[:40]
        fig = image_grid([("original", to_unit(dataset, xs)),
                          ("reconstruction",
                           to_unit(dataset, rec.images[torch.tensor(quality["pairing"])]))],
                         out_dir / f"gradient_{slug}.png")
        report["scenarios"][sc["name"]] = {
            "psnr": quality["psnr"], "ssim": quality["ssim"], "label_accuracy": label_acc,
            "images": n, "attack": sc.get("attack", "inverting_gradients"),
            "update": spec.mode, "seconds": time.perf_counter() - t0, "figure": fig.name,
        }
        advance(1)
    return report


def gi_model(dataset: str) -> torch.nn.Module:
    """The small CNN attacked in the gradient experiment (untrained: fresh initialisation)."""
    from veil.audit.targets import build_model
    x, _ = load_dataset(dataset, "test", limit=1)
    return build_model("cnn", tuple(x.shape[1:]), 10, hidden=8)


def _fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    model.eval()


def _label_accuracy(true: torch.Tensor, guessed: torch.Tensor) -> float:
    """Fraction of the batch's labels recovered, as multisets (order is unknown)."""
    t = torch.bincount(true, minlength=10)
    g = torch.bincount(guessed, minlength=10)
    return float(torch.minimum(t, g).sum()) / len(true)


__all__ = ["MembershipTarget", "Tracker", "gradient_experiment",
           "inversion_experiment", "load_model", "membership_experiment", "membership_of_model",
           "membership_targets"]
