"""Render a plot CSV (training curve, nDCG per system) to PNG for MLflow artifacts."""

from __future__ import annotations

import csv
from pathlib import Path


def render_csv(path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = list(csv.DictReader(open(path)))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    if "step" in rows[0]:
        steps = [int(r["step"]) for r in rows]
        for col in ("loss", "corrector_loss", "cos_stale_fresh", "cos_corrected_fresh"):
            vals = [float(r[col]) for r in rows if r.get(col) not in (None, "")]
            if len(vals) == len(steps):
                ax.plot(steps, vals, label=col)
        ax.set_xlabel("step")
    else:
        labels = [f"{r['split']}/{r['system']}" for r in rows]
        ax.barh(labels, [float(r["ndcg_at_10"]) for r in rows])
        ax.set_xlabel("nDCG@10")
    ax.legend() if ax.get_legend_handles_labels()[0] else None
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
