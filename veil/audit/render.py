"""Tables of the attack experiments (rich), shared by ``veil attack`` and ``veil bench attacks``.

Example
-------
>>> t = gradient_table({"tv_weight": {"fedsgd": {"chosen": 0.01}},
...                     "scenarios": {"fedsgd": {"images": 1, "psnr": 20.0, "ssim": 0.5,
...                                              "label_accuracy": 1.0, "seconds": 2.0}}})
>>> t.row_count
1
"""

from __future__ import annotations


def _fmt(v: object) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def membership_table(report: dict):
    """Rich table: one row per target and attack."""
    from rich.table import Table
    t = Table(title=f"Membership inference ({report['num_shadows']} shadow models)")
    for col in ("target", "train/test acc", "attack", "AUC", "bal. acc", "TPR@0.1%FPR",
                "TPR@1%FPR"):
        t.add_column(col, justify="right" if col not in ("target", "attack") else "left",
                     no_wrap=True)
    for name, tr in report["targets"].items():
        acc = f"{tr['train_accuracy']:.2f}/{tr['test_accuracy']:.2f}"
        for i, (attack, m) in enumerate(tr["attacks"].items()):
            t.add_row(name if i == 0 else "", acc if i == 0 else "", attack, _fmt(m["auc"]),
                      _fmt(m["balanced_accuracy"]), _fmt(m["tpr_at_0.1%_fpr"]),
                      _fmt(m["tpr_at_1%_fpr"]))
    return t


def inversion_table(report: dict):
    """Rich table: one row per inversion mode."""
    from rich.table import Table
    t = Table(title=f"Model inversion on {report['dataset']} "
                    f"(model test accuracy {report['model']['test_accuracy']:.3f})")
    for col in ("mode", "recognised", "mean confidence", "corr. to class mean",
                "closest to own class", "seconds"):
        t.add_column(col, justify="left" if col == "mode" else "right", no_wrap=col == "mode")
    for name, m in report["modes"].items():
        t.add_row(name, _fmt(m["recognised"]), _fmt(m["mean_confidence"]),
                  _fmt(m["mean_correlation"]), _fmt(m["closest_to_own_class"]),
                  f"{m['seconds']:.1f}")
    return t


def gradient_table(report: dict):
    """Rich table: one row per gradient-inversion scenario."""
    from rich.table import Table
    tvs = ", ".join(f"{k} {v['chosen']:g}" for k, v in report["tv_weight"].items())
    t = Table(title=f"Gradient inversion on {report.get('dataset', 'mnist')} "
                    f"(TV weight tuned: {tvs})")
    for col in ("scenario", "images", "PSNR dB", "SSIM", "labels", "seconds"):
        t.add_column(col, justify="left" if col == "scenario" else "right",
                     no_wrap=col == "scenario")
    for name, s in report["scenarios"].items():
        t.add_row(name, str(s["images"]), f"{s['psnr']:.1f}", f"{s['ssim']:.3f}",
                  _fmt(s["label_accuracy"]), f"{s['seconds']:.1f}")
    return t
