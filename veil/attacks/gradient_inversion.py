"""Gradient inversion: reconstruct a client's training images from its federated update.

Two attacks of the literature, on the two update types of federated learning:

* **DLG** (Zhu, Liu, Han 2019): optimise dummy inputs (and, when the labels are not
  given, dummy soft labels) so that their gradient matches the observed one in L2,
  with L-BFGS.
* **Inverting Gradients** (Geiping, Bauermeister, Droge, Moeller 2020): cosine
  distance between the gradients plus a total-variation prior, Adam on the *signed*
  gradient with a step schedule, a box constraint on pixel values, several random
  restarts keeping the best match.

Updates are either one gradient step (**FedSGD**: the gradient of the mean loss of the
client's batch) or a multi-step local training (**FedAvg**: the client runs
``local_steps`` SGD steps on mini-batches and sends ``w_start - w_end``); the attack
simulates the same local training differentiably (``torch.func``) and matches its
output. Labels can be recovered from the last layer's gradient (iDLG's sign rule,
extended to batches). Server-side defences are modelled by :func:`dp_noise` (clip and
add Gaussian noise from :mod:`veil.csprng`) and :func:`aggregate` (the mean of
several clients' updates).

Example
-------
>>> import torch
>>> from veil.attacks.gradient_inversion import client_update, dlg, UpdateSpec
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Sigmoid(),
...                             torch.nn.Linear(8, 3))
>>> x, y = torch.rand(1, 1, 4, 4), torch.tensor([2])
>>> update = client_update(model, x, y)
>>> rec = dlg(model, update, (1, 4, 4), labels=y, iterations=50, bounds=(0, 1))
>>> bool((rec.images - x).abs().max() < 1e-2)
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.func import functional_call

from veil.csprng import CSPRNG, default_generator

Update = list[torch.Tensor]


@dataclass(frozen=True)
class UpdateSpec:
    """What the client computes (the attacker knows the protocol, as in the papers).

    Attributes
    ----------
    mode: ``"fedsgd"`` (one gradient) or ``"fedavg"`` (local SGD, sends ``w0 - w_end``).
    local_steps, lr, local_batch: FedAvg's local training (``local_batch=None``: full batch);
        mini-batches are taken in order, cycling over the client's data.
    """

    mode: str = "fedsgd"
    local_steps: int = 1
    lr: float = 0.1
    local_batch: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("fedsgd", "fedavg"):
            raise ValueError(f"mode must be 'fedsgd' or 'fedavg', got {self.mode!r}")
        if self.local_steps < 1 or self.lr <= 0:
            raise ValueError("local_steps must be >= 1 and lr > 0")


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    # Leaves that autograd can differentiate through (the model's own tensors stay untouched).
    return {k: v.detach().requires_grad_(True) for k, v in model.named_parameters()}


def _simulate(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
              labels: torch.Tensor, spec: UpdateSpec, create_graph: bool) -> Update:
    """The client's update as a differentiable function of ``x`` (and soft ``labels``)."""
    names = list(params)

    def loss_at(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xb,))
        if yb.dtype == torch.long:
            return nn.functional.cross_entropy(out, yb)
        return -(yb * torch.log_softmax(out, 1)).sum(1).mean()      # soft labels (DLG)

    if spec.mode == "fedsgd":
        grads = torch.autograd.grad(loss_at(params, x, labels), [params[n] for n in names],
                                    create_graph=create_graph)
        return list(grads)
    p = dict(params)
    bs = spec.local_batch or len(x)
    for step in range(spec.local_steps):
        lo = (step * bs) % len(x)
        sel = torch.arange(lo, lo + bs) % len(x)
        grads = torch.autograd.grad(loss_at(p, x[sel], labels[sel]), [p[n] for n in names],
                                    create_graph=create_graph)
        p = {n: p[n] - spec.lr * g for n, g in zip(names, grads, strict=True)}
    return [params[n] - p[n] for n in names]


def client_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  spec: UpdateSpec = UpdateSpec()) -> Update:
    """The update a client with data ``(x, y)`` sends for ``model`` (detached tensors).

    Example
    -------
    >>> m = torch.nn.Linear(3, 2)
    >>> [g.shape for g in client_update(m, torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]))]
    [torch.Size([2, 3]), torch.Size([2])]
    """
    x, y = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need matching non-empty inputs and labels, got {len(x)}, {len(y)}")
    params = _params(model)
    return [u.detach() for u in _simulate(model, params, x, y, spec, create_graph=False)]


def aggregate(updates: Sequence[Update]) -> Update:
    """The server's view under secure aggregation: the mean of the clients' updates."""
    if not updates:
        raise ValueError("need at least one update")
    return [torch.stack(parts).mean(0) for parts in zip(*updates, strict=True)]


def dp_noise(update: Update, clip: float, noise_multiplier: float,
             generator: CSPRNG | None = None) -> Update:
    """Clip the update to L2 norm ``clip`` and add ``N(0, (noise_multiplier * clip)^2)`` noise.

    The noise comes from :mod:`veil.csprng` (the client-side DP of DP-FedAvg).
    """
    if clip <= 0 or noise_multiplier < 0:
        raise ValueError("clip must be > 0 and noise_multiplier >= 0")
    gen = generator or default_generator()
    norm = torch.sqrt(sum((u.double() ** 2).sum() for u in update))
    factor = min(1.0, clip / (float(norm) + 1e-12))
    return [u * factor + gen.normal(u.shape, std=noise_multiplier * clip, dtype=u.dtype)
            for u in update]


def recover_labels(update: Update, num_images: int, weight_index: int | None = None
                   ) -> torch.Tensor:
    """Labels of the client's batch from the last linear layer's update.

    With softmax cross-entropy and non-negative inputs to the last layer, the row of
    the last weight's gradient belonging to a label present in the batch sums to a
    negative number (Zhao et al. 2020 for one image; Wainakh et al. 2022 for batches).
    Classes with negative sums are taken once each, most negative first; if the batch
    is larger, the remaining slots repeat the classes with the most negative sums.
    FedAvg updates ``w0 - w_end`` have the gradient's sign, so the same rule applies.
    ``weight_index`` picks the last layer's weight in the update (default: the last
    2-D tensor).
    """
    if num_images < 1:
        raise ValueError("num_images must be >= 1")
    if weight_index is None:
        matrices = [i for i, u in enumerate(update) if u.dim() == 2]
        if not matrices:
            raise ValueError("the update has no linear weight (2-D tensor)")
        weight_index = matrices[-1]
    w = update[weight_index]
    if w.dim() != 2:
        raise ValueError(f"update[{weight_index}] has shape {tuple(w.shape)}, not a linear weight")
    sums = w.double().sum(1)
    order = torch.argsort(sums)
    negative = order[sums[order] < 0].tolist()
    labels = negative[:num_images]
    # Fill the remaining slots in proportion to how negative each row is.
    pool = negative or order[:1].tolist()
    weight = -sums[pool].clamp(max=0) + 1e-12
    while len(labels) < num_images:
        share = weight / weight.sum() * num_images
        counts = {c: labels.count(c) for c in pool}
        deficit = [float(share[i]) - counts[c] for i, c in enumerate(pool)]
        labels.append(pool[int(np.argmax(deficit))])
    return torch.tensor(sorted(labels), dtype=torch.long)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean absolute difference of neighbouring pixels."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
            + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def _l2(a: Update, b: Update) -> torch.Tensor:
    return sum(((u - v) ** 2).sum() for u, v in zip(a, b, strict=True))


def _cosine(a: Update, b: Update) -> torch.Tensor:
    dot = sum((u * v).sum() for u, v in zip(a, b, strict=True))
    na = torch.sqrt(sum((u ** 2).sum() for u in a))
    nb = torch.sqrt(sum((v ** 2).sum() for v in b))
    return 1 - dot / (na * nb + 1e-20)


@dataclass
class Reconstruction:
    """Reconstructed images, the labels used, the final matching loss and its history."""

    images: torch.Tensor
    labels: torch.Tensor
    loss: float
    history: list[float]


def _check_update(model: nn.Module, update: Update) -> Update:
    shapes = [p.shape for p in model.parameters()]
    if len(update) != len(shapes) or any(u.shape != s for u, s in zip(update, shapes, strict=True)):
        raise ValueError("the update does not match the model's parameters")
    if not all(torch.isfinite(u).all() for u in update):
        raise ValueError("the update contains NaN or inf")
    return [u.detach() for u in update]


def _start(shape: tuple[int, ...], bounds: tuple[float, float] | None,
           gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=gen)  # not-secret: random restart of the attack
    if bounds is not None:
        lo, hi = bounds
        x = (lo + hi) / 2 + x * (hi - lo) / 4
        x = x.clamp(lo, hi)
    return x


def dlg(model: nn.Module, update: Update, input_shape: Sequence[int], num_images: int = 1,
        labels: torch.Tensor | None = None, spec: UpdateSpec = UpdateSpec(),
        iterations: int = 300, lr: float = 1.0, restarts: int = 2,
        bounds: tuple[float, float] | None = None, tol: float = 1e-10, seed: int = 0,
        progress: Callable[[int], None] | None = None) -> Reconstruction:
    """Deep Leakage from Gradients: L2 gradient matching with L-BFGS.

    L-BFGS stalls on the kinks of ReLU networks (a failed line search leaves it in
    place); a stalled run restarts its curvature memory from the current point, and
    ``restarts`` independent random starts keep the best final match.

    Parameters
    ----------
    model: the global model the update was computed on (white box, as the server has).
    update: the observed update (list of tensors shaped like the parameters).
    input_shape: shape of one input, e.g. ``(1, 28, 28)``.
    labels: known or recovered labels; ``None`` optimises soft labels too (original DLG).
    iterations: L-BFGS steps per restart (one step: a line search of a few evaluations).
    bounds: clamp the reconstruction to this pixel range at the end.
    tol: stop once the squared gradient distance falls below this.
    """
    update = _check_update(model, update)
    if restarts < 1 or iterations < 1:
        raise ValueError("restarts and iterations must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    params = _params(model)
    best: Reconstruction | None = None
    for _ in range(restarts):
        rec = _dlg_run(model, params, update, (num_images, *input_shape), labels, spec,
                       iterations, lr, bounds, tol, gen, progress)
        if best is None or rec.loss < best.loss:
            best = rec
        if best.loss < tol:
            break
    assert best is not None
    return best


def _dlg_run(model: nn.Module, params: dict[str, torch.Tensor], update: Update,
             shape: tuple[int, ...], labels: torch.Tensor | None, spec: UpdateSpec,
             iterations: int, lr: float, bounds: tuple[float, float] | None, tol: float,
             gen: torch.Generator, progress: Callable[[int], None] | None) -> Reconstruction:
    x = _start(shape, bounds, gen).requires_grad_(True)
    variables = [x]
    if labels is None:
        num_classes = update[-1].shape[0]
        soft = torch.randn(shape[0], num_classes, generator=gen)  # not-secret: attack start
        variables.append(soft.requires_grad_(True))

    def fresh() -> torch.optim.LBFGS:
        return torch.optim.LBFGS(variables, lr=lr, max_iter=1, history_size=100,
                                 line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        y = labels if labels is not None else torch.softmax(variables[1], 1)
        loss = _l2(_simulate(model, params, x, y, spec, create_graph=True), update)
        loss.backward()
        return loss

    opt = fresh()
    history: list[float] = []
    stalled = 0
    for _ in range(iterations):
        loss = float(opt.step(closure).detach())
        if progress:
            progress(1)
        stalled = stalled + 1 if history and loss >= history[-1] * (1 - 1e-6) else 0
        history.append(loss)
        if not np.isfinite(loss) or loss < tol:
            break
        if stalled == 2:
            opt = fresh()
        elif stalled > 4:
            break
    with torch.no_grad():
        if bounds is not None:
            x.clamp_(*bounds)
    y = labels if labels is not None else torch.softmax(variables[1].detach(), 1)
    final = float(_l2(_simulate(model, params, x, y, spec, create_graph=False), update).detach())
    used = labels if labels is not None else y.argmax(1)
    return Reconstruction(x.detach().clone(), used, final, history)


def inverting_gradients(model: nn.Module, update: Update, input_shape: Sequence[int],
                        labels: torch.Tensor, spec: UpdateSpec = UpdateSpec(),
                        tv_weight: float = 1e-4, iterations: int = 1000, lr: float = 0.1,
                        restarts: int = 2, bounds: tuple[float, float] | None = None,
                        seed: int = 0, progress: Callable[[int], None] | None = None
                        ) -> Reconstruction:
    """Inverting Gradients: cosine matching + TV prior, signed Adam, restarts.

    Parameters
    ----------
    labels: ``(B,)`` labels of the batch (known, or from :func:`recover_labels`).
    tv_weight: weight of the total-variation prior; tune per dataset (digits need a much
        smaller one than natural images; see :func:`tune_tv_weight`).
    iterations: Adam steps per restart; the step size drops 10x at 3/8, 5/8 and 7/8.
    restarts: independent random starts; the one with the lowest objective is kept.
    bounds: box constraint on pixel values (normalised units), enforced every step.
    """
    update = _check_update(model, update)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if restarts < 1 or iterations < 1:
        raise ValueError("restarts and iterations must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    params = _params(model)
    best: Reconstruction | None = None
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    for _ in range(restarts):
        x = _start((len(labels), *input_shape), bounds, gen).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
        history: list[float] = []
        for _ in range(iterations):
            opt.zero_grad()
            match = _cosine(_simulate(model, params, x, labels, spec, create_graph=True), update)
            loss = match + tv_weight * total_variation(x)
            loss.backward()
            x.grad.sign_()
            opt.step()
            sched.step()
            if bounds is not None:
                with torch.no_grad():
                    x.clamp_(*bounds)
            history.append(float(loss.detach()))
            if progress:
                progress(1)
        xf = x.detach().requires_grad_(True)
        final = float((_cosine(_simulate(model, params, xf, labels, spec, create_graph=False),
                               update) + tv_weight * total_variation(xf)).detach())
        if best is None or final < best.loss:
            best = Reconstruction(x.detach().clone(), labels, final, history)
    assert best is not None
    return best


def image_quality(original: torch.Tensor, reconstruction: torch.Tensor,
                  match: bool = True) -> dict[str, float | list]:
    """PSNR and SSIM (scikit-image) of reconstructions in ``[0, 1]``, images ``(B, C, H, W)``.

    With ``match`` the reconstructions are first paired to the originals by the
    assignment that maximises the total PSNR (a batch is recovered in no order).
    Returns mean PSNR/SSIM and the per-image values and pairing.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = torch.as_tensor(original, dtype=torch.float64).clamp(0, 1).numpy()
    b = torch.as_tensor(reconstruction, dtype=torch.float64).clamp(0, 1).numpy()
    if a.shape[1:] != b.shape[1:] or a.ndim != 4:
        raise ValueError(f"need image batches (B, C, H, W) of equal image shape, got "
                         f"{a.shape} and {b.shape}")

    def psnr(u: np.ndarray, v: np.ndarray) -> float:
        if np.array_equal(u, v):
            return float("inf")
        return float(peak_signal_noise_ratio(u, v, data_range=1.0))

    table = np.array([[psnr(u, v) for v in b] for u in a])
    if match:
        finite = np.where(np.isinf(table), 1e3, table)
        rows, cols = linear_sum_assignment(finite, maximize=True)
    else:
        rows = cols = np.arange(min(len(a), len(b)))
    side = min(a.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    ssim = [float(structural_similarity(a[r], b[c], data_range=1.0, channel_axis=0, win_size=win))
            for r, c in zip(rows, cols, strict=True)]
    psnrs = [float(table[r, c]) for r, c in zip(rows, cols, strict=True)]
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssim)),
            "psnr_each": psnrs, "ssim_each": ssim, "pairing": [int(c) for c in cols]}


def tune_tv_weight(model: nn.Module, public_x: torch.Tensor, public_y: torch.Tensor,
                   to_unit: Callable[[torch.Tensor], torch.Tensor],
                   candidates: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1),
                   spec: UpdateSpec = UpdateSpec(), **attack_kwargs) -> tuple[float, dict]:
    """Pick the TV weight that best reconstructs *public* images of the same dataset.

    The attacker simulates updates on data it owns, runs Inverting Gradients with each
    candidate weight and keeps the one with the highest mean PSNR.
    Returns ``(best weight, {weight: psnr})``.
    """
    update = client_update(model, public_x, public_y, spec)
    scores = {}
    for w in candidates:
        rec = inverting_gradients(model, update, tuple(public_x.shape[1:]), public_y, spec,
                                  tv_weight=w, **attack_kwargs)
        scores[w] = image_quality(to_unit(public_x), to_unit(rec.images))["psnr"]
    return max(scores, key=scores.get), scores
