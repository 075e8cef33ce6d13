"""``veil audit``: the leakage report for a user's own model.

:func:`load_user_model` reads a model the ways users save them (a ``state_dict``
plus ``module:Class``, TorchScript, ``torch.export`` ``.pt2``, a whole pickled
module); each failure is a one-line :class:`ModelLoadError` saying what to do.
:func:`audit` then attacks the model: the loss-threshold and LiRA membership
inference on its training set (members) against held-out data (non-members),
and white-box model inversion of a few classes; with ``defenses=("dp",)`` it
retrains the architecture with DP-SGD (:mod:`veil.dp`) and runs the same attacks
again, so the report shows what the protection buys at what accuracy cost.
:func:`render_html` writes one self-contained page (plots inline as base64 PNG).

Inputs must be what the model expects: the audit feeds the data files to the
model unchanged; built-in dataset names (``mnist``, ``cifar10``, ``digits``) give
Veil's normalisation (MNIST: ``(x/255 - 0.1307) / 0.3081``).

Example
-------
>>> report = audit(model, x_train, y_train, x_test, y_test)   # doctest: +SKIP
>>> report["rows"]["model"]["membership"]["lira"]["tpr_at_1%_fpr"]   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import copy
import html
import importlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

Tracker = Callable[[str, int], Callable[[int], None]]


class ModelLoadError(ValueError):
    """The model file cannot be loaded; the message says what to do (one line)."""


def _no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n=1: None


def import_arch(arch: str) -> type:
    """``"package.module:Class"`` -> the class (a one-line error otherwise)."""
    module_name, _, cls_name = arch.partition(":")
    if not module_name or not cls_name:
        raise ModelLoadError(f"--arch must look like package.module:Class, got {arch!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import {module_name!r} ({exc}); put its folder on "
                             "PYTHONPATH or install the package") from None
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ModelLoadError(f"{arch!r} is not an nn.Module class")
    return cls


def load_user_model(path: str | Path, arch: str | None = None) -> nn.Module:
    """Load a classifier saved as a state_dict (needs ``arch``), TorchScript, ``.pt2`` or a
    pickled module. Unpickling runs code from the file: only audit models you trust."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist")
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module()
        except Exception as exc:
            raise ModelLoadError(f"{path} is not a torch.export program ({type(exc).__name__}); "
                                 "save one with torch.export.save(torch.export.export(model, "
                                 "(x,)), 'model.pt2')") from None
    try:
        return torch.jit.load(str(path)).eval()
    except Exception:
        pass  # not TorchScript: a state_dict or a pickled module
    try:
        obj = torch.load(path, weights_only=arch is not None, map_location="cpu")
    except (AttributeError, ModuleNotFoundError) as exc:
        raise ModelLoadError(f"{path} pickles a class that cannot be imported ({exc}); put its "
                             "module on PYTHONPATH, or save model.state_dict() and pass "
                             "--arch module:Class") from None
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path} with torch.load ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(obj, nn.Module):
        return obj.eval()
    if isinstance(obj, dict):
        if arch is None:
            raise ModelLoadError(f"{path} holds a state_dict: pass --arch module:Class to say "
                                 "which architecture it belongs to")
        model = import_arch(arch)()
        try:
            model.load_state_dict(obj)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ModelLoadError(f"the state_dict does not fit {arch}: {first}") from None
        return model.eval()
    raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a model or a state_dict")


def load_data(spec: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``mnist[:N]`` / ``cifar10[:N]`` / ``digits[:N]`` (Veil's normalisation), or a file:
    ``.pt`` holding ``(x, y)`` or ``{"x": ..., "y": ...}``, or ``.npz`` with ``x`` and ``y``."""
    name, _, limit = spec.partition(":")
    if name in ("mnist", "cifar10", "digits") and not Path(spec).exists():
        from veil.audit.targets import load_dataset
        return load_dataset(name, split, int(limit) if limit else None)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"{spec} is neither a dataset name (mnist, cifar10, digits) nor a file")
    if path.suffix == ".npz":
        data = np.load(path)
        x, y = data["x"], data["y"]
    else:
        data = torch.load(path, weights_only=True)
        x, y = (data["x"], data["y"]) if isinstance(data, dict) else data
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{spec}: {len(x)} inputs and {len(y)} labels")
    return x, y


def fresh_copy(model: nn.Module) -> Callable[[], nn.Module] | None:
    """A factory of re-initialised copies (``None`` for TorchScript / exported programs)."""
    if isinstance(model, torch.jit.ScriptModule) or isinstance(model, torch.fx.GraphModule):
        return None

    def make() -> nn.Module:
        m = copy.deepcopy(model)
        for sub in m.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        return m

    return make


def _fit(factory: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, epochs: int,
         dp_epsilon: float | None, seed: int) -> nn.Module:
    """One helper for the audit's shadow, reference and defended models (Adam, or DP-SGD)."""
    from veil.audit.dp_training import calibrate, train_dp_sgd
    from veil.audit.targets import Recipe
    from veil.models.training import train

    torch.manual_seed(seed)  # initialisation of a shadow model: not secret
    model = factory()
    if dp_epsilon is None:
        return train(model, x, y, epochs=epochs, batch_size=64, lr=1e-3, seed=seed)
    recipe = calibrate(Recipe(epochs=epochs, batch_size=max(1, len(x) // 20), lr=0.5,
                              optimizer="sgd", dp_noise=1.0, dp_clip=1.0), len(x), dp_epsilon)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9)
    return train_dp_sgd(model, x, y, recipe, opt).eval()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    from veil.models.training import evaluate
    return evaluate(model, x, y)


def _membership(model, factory, x_pool, y_pool, members, shadows, epochs, dp_epsilon, seed,
                tracker) -> tuple[dict, Any]:
    from veil.attacks.membership import run_attacks
    from veil.attacks.scores import ScoreOracle

    counter = iter(range(10**6))

    def fit(indices: np.ndarray) -> nn.Module:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return _fit(factory, x_pool[idx], y_pool[idx], epochs, dp_epsilon,
                    seed * 7919 + next(counter))

    advance = tracker(f"membership: {shadows} shadow models", shadows)
    rep = run_attacks(ScoreOracle(model), x_pool, y_pool, members, fit, num_shadows=shadows,
                      seed=seed, progress=advance)
    keep = ("threshold", "lira", "lira_offline")
    return {k: rep.results[k].to_dict() for k in keep}, {k: rep.results[k] for k in keep}


def _inversion(model: nn.Module, shape: tuple[int, ...], classes: list[int], bounds,
               tracker) -> tuple[dict, torch.Tensor]:
    from veil.attacks.inversion import invert_class

    advance = tracker("model inversion", len(classes))
    images, rows = [], {}
    for c in classes:
        r = invert_class(model, c, shape, max_iter=200, bounds=bounds)
        images.append(r.image.reshape(shape))
        rows[str(c)] = {"confidence": float(r.confidence), "predicted": int(r.predicted)}
        advance(1)
    return rows, torch.stack(images)


def audit(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
          x_test: torch.Tensor, y_test: torch.Tensor, defenses: tuple[str, ...] = (),
          shadows: int = 8, epochs: int = 5, dp_epsilon: float = 8.0,
          inversion_classes: int = 3, seed: int = 0,
          factory: Callable[[], nn.Module] | None = None,
          tracker: Tracker = _no_progress) -> dict[str, Any]:
    """Attack ``model`` (trained on ``x_train``) and, with ``defenses``, a DP-SGD retrain of it.

    Returns a JSON-able report; the matplotlib figures are under ``report["_figures"]``
    (PNG bytes, removed by :func:`to_json`).
    """
    for d in defenses:
        if d != "dp":
            raise ValueError(f"unknown defense {d!r}; available: dp")
    factory = factory or fresh_copy(model)
    if factory is None:
        from veil.audit.targets import build_model
        shape, classes = tuple(x_train.shape[1:]), int(max(y_train.max(), y_test.max())) + 1
        factory = lambda: build_model("mlp", shape, classes, 128)  # noqa: E731
        shadow_note = "shadow models: Veil's reference MLP (the model's class is not available)"
    else:
        shadow_note = "shadow models: fresh copies of the model's own architecture"
    if defenses and fresh_copy(model) is None:
        raise ValueError("defenses retrain the architecture: give a state_dict with --arch or a "
                         "pickled module (TorchScript and .pt2 cannot be retrained)")
    x_pool = torch.cat([x_train, x_test])
    y_pool = torch.cat([y_train, y_test])
    members = np.r_[np.ones(len(x_train), bool), np.zeros(len(x_test), bool)]
    lo, hi = float(x_pool.min()), float(x_pool.max())
    n_classes = int(y_pool.max()) + 1
    classes = list(range(min(inversion_classes, n_classes)))
    rows: dict[str, Any] = {}
    figures: dict[str, bytes] = {}
    candidates = [("model", model, None)]
    if "dp" in defenses:
        t0 = time.perf_counter()
        advance = tracker(f"retraining with DP-SGD (epsilon {dp_epsilon:g})", 1)
        defended = _fit(factory, x_train, y_train, epochs, dp_epsilon, seed + 1)
        advance(1)
        candidates.append((f"dp (epsilon={dp_epsilon:g})", defended, dp_epsilon))
        rows_time = time.perf_counter() - t0
    for name, m, eps in candidates:
        m.eval()
        t0 = time.perf_counter()
        mem, results = _membership(m, factory, x_pool, y_pool, members, shadows, epochs, eps,
                                   seed, tracker)
        inv, images = _inversion(m, tuple(x_train.shape[1:]), classes, (lo, hi), tracker)
        rows[name] = {"train_accuracy": _accuracy(m, x_train, y_train),
                      "test_accuracy": _accuracy(m, x_test, y_test),
                      "membership": mem, "inversion": inv,
                      "seconds": time.perf_counter() - t0}
        if eps is not None:
            rows[name]["retrain_seconds"] = rows_time
        figures[f"roc {name}"] = _roc_png(results, f"membership ROC: {name}")
        figures[f"inversion {name}"] = _grid_png(images, lo, hi, classes, name)
    return {"model": type(model).__name__, "train_examples": len(x_train),
            "test_examples": len(x_test), "shadows": shadows, "note": shadow_note,
            "rows": rows, "_figures": figures}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _roc_png(results: dict, title: str) -> bytes:
    import tempfile

    from veil.audit.plots import roc_plot
    with tempfile.TemporaryDirectory() as d:
        return roc_plot(results, Path(d) / "roc.png", title=title).read_bytes()


def _grid_png(images: torch.Tensor, lo: float, hi: float, classes: list[int], name: str) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = ((images - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    fig, axes = plt.subplots(1, len(classes), figsize=(1.6 * len(classes), 1.9), squeeze=False)
    for ax, img, c in zip(axes[0], unit, classes, strict=True):
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"class {c}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"model inversion: {name}", fontsize=9)
    return _png(fig)


def to_json(report: dict) -> dict:
    """The report without its figure bytes."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def render_html(report: dict, title: str = "Veil audit") -> str:
    """One self-contained HTML page: tables and inline base64 PNG figures, no external assets."""
    rows = []
    for name, r in report["rows"].items():
        for attack, m in r["membership"].items():
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(r['train_accuracy'])}</td>"
                        f"<td>{_fmt(r['test_accuracy'])}</td><td>{html.escape(attack)}</td>"
                        f"<td>{_fmt(m.get('auc'))}</td>"
                        f"<td>{_fmt(m.get('tpr_at_0.1%_fpr'))}</td>"
                        f"<td>{_fmt(m.get('tpr_at_1%_fpr'))}</td></tr>")
    figs = "".join(
        f'<figure><img alt="{html.escape(k)}" src="data:image/png;base64,'
        f'{base64.b64encode(v).decode()}"><figcaption>{html.escape(k)}</figcaption></figure>'
        for k, v in report.get("_figures", {}).items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:.25em .6em;text-align:right}}figure{{display:inline-block;
margin:.5em}}img{{max-width:26em}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(str(report.get('model')))}: {report.get('train_examples')} training examples
(members), {report.get('test_examples')} held-out (non-members); {report.get('shadows')} shadow
models. {html.escape(str(report.get('note', '')))}.</p>
<h2>Membership inference</h2>
<table id="membership"><thead><tr><th>model</th><th>train acc</th><th>test acc</th>
<th>attack</th><th>AUC</th><th>TPR @ 0.1% FPR</th><th>TPR @ 1% FPR</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<h2>Figures</h2>{figs}
</body></html>
"""
