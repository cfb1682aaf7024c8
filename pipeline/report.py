"""`recsys runs show`: an evaluation readable without a notebook, as text, a PNG chart and an HTML page."""

from __future__ import annotations

import html
import io
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402

from components.atomic_io import atomic_write  # noqa: E402
from pipeline.pipeline import RMSE  # noqa: E402


def as_text(metrics: Dict[str, Dict[str, float]], failures: List[str], blessed: bool) -> str:
    names = sorted({name for values in metrics.values() for name in values})
    rows = [["slice", *names]]
    ordered = sorted(metrics, key=lambda s: (s != "overall", s))
    for slice_name in ordered:
        rows.append([slice_name, *(f"{metrics[slice_name][n]:.4f}" if n in metrics[slice_name] else "-"
                                   for n in names)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    verdict = "BLESSED: every threshold passed" if blessed else "NOT BLESSED: " + "; ".join(failures or ["no verdict"])
    return "\n".join(lines + ["", verdict])


def _chart(metrics: Dict[str, Dict[str, float]]) -> bytes:
    slices = sorted((s for s in metrics if RMSE in metrics[s]), key=lambda s: (s != "overall", s))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(slices) + 1.2))
    ax.barh(slices[::-1], [metrics[s][RMSE] for s in slices[::-1]], color="#4c72b0")
    ax.set_xlabel("RMSE (lower is better)")
    ax.set_title("RMSE by slice")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _write(path: str, data: bytes) -> None:
    atomic_write(path, data)


def write(out_prefix: str, title: str, metrics: Dict[str, Dict[str, float]], failures: List[str],
          blessed: bool) -> List[str]:
    """Writes `<prefix>.png` (RMSE per slice) and `<prefix>.html` (table, verdict, chart)."""
    png, page = out_prefix + ".png", out_prefix + ".html"
    tf.io.gfile.makedirs(out_prefix.rsplit("/", 1)[0])
    _write(png, _chart(metrics))
    text = as_text(metrics, failures, blessed)
    body = (f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><pre>{html.escape(text)}</pre>"
            f"<img src='{html.escape(png.rsplit('/', 1)[-1])}' alt='RMSE by slice'></body></html>")
    _write(page, body.encode("utf-8"))
    return [page, png]
