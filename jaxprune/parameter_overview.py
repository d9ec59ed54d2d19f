"""A table of a network's prunable parameters — path, shape, count and, given a mask, density — to print at the
start of a run and after pruning (as ``clu.parameter_overview`` prints, without its TensorFlow dependency)."""
from __future__ import annotations

import math

import numpy as np

from jaxprune import masks


def rows(params: masks.PyTree, mask: masks.PyTree | None = None) -> list[dict]:
    """One dict per prunable leaf of ONE network's ``params``: ``path`` ('/'-joined), ``shape``, ``count`` and, with
    ``mask``, ``density`` = kept / count. A mask with leading seed axes gives the mean density over them."""
    shapes = [tuple(np.shape(p)) for p in masks.prunable_leaves(params, params)]
    out = [{"path": name, "shape": shape, "count": math.prod(shape)}
           for name, shape in zip(masks.prunable_names(params), shapes)]
    if mask is not None:
        for row, m in zip(out, masks.prunable_leaves(mask, params)):
            row["density"] = float(np.mean(np.asarray(m)))
    return out


def table(params: masks.PyTree, mask: masks.PyTree | None = None) -> str:
    """:func:`rows` as aligned text, one line per prunable layer and a total (its density: the fraction of all
    prunable weights kept)."""
    layers = rows(params, mask)
    total = {"path": "total", "shape": "", "count": sum(r["count"] for r in layers)}
    if mask is not None:
        total["density"] = sum(r["density"] * r["count"] for r in layers) / max(total["count"], 1)
    header = ["layer", "shape", "weights"] + (["density"] if mask is not None else [])
    cells = [[r["path"], str(r["shape"]), f"{r['count']:,}"] + ([f"{r['density']:.4f}"] if mask is not None else [])
             for r in [*layers, total]]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    lines = [_aligned(c, widths) for c in [header, *cells]]
    return "\n".join([*lines[:-1], "-" * len(lines[0]), lines[-1]])


def _aligned(cells: list[str], widths: list[int]) -> str:
    """Text columns (path, shape) left-aligned, numbers right-aligned."""
    return "  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(cells, widths)))
