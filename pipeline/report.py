"""`recsys runs show`: an evaluation readable without a notebook, as text, a PNG chart and an HTML page.

Two sources: TFMA's metrics per slice (rating models: RMSE, MAE, ...) and the ranking gate's report
(every model: Recall@k and NDCG@k per slice beside most popular and the latest blessed model).
"""

from __future__ import annotations

import html
import io
from typing import Any, Dict, List, Optional

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402

from components.atomic_io import atomic_write  # noqa: E402
from pipeline.pipeline import RMSE  # noqa: E402


def _slice_order(slices) -> List[str]:
    return sorted(slices, key=lambda s: (s != "overall", s))


def _table(rows: List[List[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]


def _ranking_columns(ranking: Dict[str, Any]) -> List[tuple]:
    """(header, source, metric) columns: the model, most popular and the baseline side by side."""
    k = ranking["k"]
    sources = [("", "model"), ("most_popular ", "most_popular")]
    if ranking.get("baseline"):
        sources.append(("baseline ", "baseline"))
    return ([(f"{prefix}recall@{k}", source, "recall") for prefix, source in sources]
            + [(f"{prefix}ndcg@{k}", source, "ndcg") for prefix, source in sources] + [("users", "model", "users")])


def ranking_text(ranking: Dict[str, Any]) -> List[str]:
    """The ranking gate's metrics per slice, the model beside most popular (and the latest blessed model)."""
    columns = _ranking_columns(ranking)
    rows = [["slice", *(header for header, _, _ in columns)]]
    for slice_name in _slice_order(ranking["model"]):
        cells = []
        for _, source, metric in columns:
            value = ((ranking.get(source) or {}).get(slice_name) or {}).get(metric)
            cells.append("-" if value is None else str(int(value)) if metric == "users" else f"{value:.4f}")
        rows.append([slice_name, *cells])
    role = "gating" if ranking.get("gated_on_ranking", True) else "reported, not gating this rating model"
    return [f"ranking on the eval split, the whole catalogue minus each user's training items ({role}):",
            *_table(rows)]


def as_text(metrics: Dict[str, Dict[str, float]], failures: List[str], blessed: bool,
            ranking: Optional[Dict[str, Any]] = None) -> str:
    lines: List[str] = []
    if metrics:
        names = sorted({name for values in metrics.values() for name in values})
        rows = [["slice", *names]]
        for slice_name in _slice_order(metrics):
            rows.append([slice_name, *(f"{metrics[slice_name][n]:.4f}" if n in metrics[slice_name] else "-"
                                       for n in names)])
        lines += _table(rows)
    if ranking:
        lines += ([""] if lines else []) + ranking_text(ranking)
    verdict = "BLESSED: every threshold passed" if blessed else "NOT BLESSED: " + "; ".join(failures or ["no verdict"])
    return "\n".join(lines + ["", verdict])


def _chart(metrics: Dict[str, Dict[str, float]], ranking: Optional[Dict[str, Any]] = None) -> bytes:
    """RMSE by slice (when TFMA ran) and Recall@k by slice for the model, most popular and the baseline."""
    panels = []
    if any(RMSE in values for values in metrics.values()):
        panels.append("rmse")
    if ranking:
        panels.append("ranking")
    slices = {"rmse": _slice_order(s for s in metrics if RMSE in metrics[s]),
              "ranking": _slice_order(ranking["model"]) if ranking else []}
    height = sum(0.35 * len(slices[p]) * (2 if p == "ranking" else 1) + 1.2 for p in panels) or 1.2
    fig, axes = plt.subplots(max(1, len(panels)), 1, figsize=(8, height), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        names = slices[panel][::-1]
        if panel == "rmse":
            ax.barh(names, [metrics[s][RMSE] for s in names], color="#4c72b0")
            ax.set_xlabel("RMSE (lower is better)")
            ax.set_title("RMSE by slice")
            continue
        sources = [("model", "#4c72b0"), ("most_popular", "#dd8452")] + (
            [("baseline", "#55a868")] if ranking.get("baseline") else [])
        width = 0.8 / len(sources)
        for n, (source, color) in enumerate(sources):
            values = [((ranking.get(source) or {}).get(s) or {}).get("recall", 0.0) for s in names]
            ax.barh([i + n * width for i in range(len(names))], values, height=width, color=color,
                    label=source.replace("_", " "))
        ax.set_yticks([i + width * (len(sources) - 1) / 2 for i in range(len(names))], names)
        ax.set_xlabel(f"Recall@{ranking['k']} (higher is better)")
        ax.set_title(f"Recall@{ranking['k']} by slice")
        ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _write(path: str, data: bytes) -> None:
    atomic_write(path, data)


def write(out_prefix: str, title: str, metrics: Dict[str, Dict[str, float]], failures: List[str],
          blessed: bool, ranking: Optional[Dict[str, Any]] = None) -> List[str]:
    """Writes `<prefix>.png` (RMSE and/or Recall@k per slice) and `<prefix>.html` (tables, verdict, chart)."""
    png, page = out_prefix + ".png", out_prefix + ".html"
    tf.io.gfile.makedirs(out_prefix.rsplit("/", 1)[0])
    _write(png, _chart(metrics, ranking))
    text = as_text(metrics, failures, blessed, ranking)
    body = (f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><pre>{html.escape(text)}</pre>"
            f"<img src='{html.escape(png.rsplit('/', 1)[-1])}' alt='metrics by slice'></body></html>")
    _write(page, body.encode("utf-8"))
    return [page, png]
