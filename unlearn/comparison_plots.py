"""Figures of the paper's comparisons (`unlearn.comparisons`): the method grid, the alpha line, and the
retain / forget frontier at several attack strengths. Same conventions as `unlearn.plots`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from unlearn import comparisons as cmp
from unlearn.capability import capability_of
from unlearn.plots import (
    AREA_COLOUR,
    STYLE,
    _legend_outside,
    _no_data,
    _save,
    area_axis,
    bounds,
    colour,
    marker,
    methods,
    plt,
    relearn_curve,
)


def plot_method_grid(results: Mapping, path: Path) -> Path:
    """One panel per method: the unlearned model, its Unlearn-and-Distill student and gold under the attack."""
    models, rows, cap = results.get("models") or {}, cmp.method_grid(results), capability_of(results)
    n = max(len(rows), 1)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, sharey=True)
        for ax, row in zip(axes[0], rows):
            for name in (f"unlearned:{row['method']}", row["student"], "gold"):
                steps, acc = relearn_curve(models.get(name) or {}) if name else ([], [])
                if steps:
                    ax.plot(steps, acc, label=name, color=colour(name), marker="o", markersize=3,
                            linestyle="--" if name == "gold" else "-")
            weak = " (weak initial suppression)" if row["weak_suppression"] else ""
            ax.set(title=f"{row['method']}{weak}", xlabel="relearning steps",
                   **bounds(cap))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left", frameon=False)
            else:
                _no_data(ax)
        axes[0][0].set_ylabel(f"forget {cap.label} (strongest attacker)")
        if not rows:
            _no_data(axes[0][0])
        fig.tight_layout()
        return _save(fig, path)


def plot_alpha_line(results: Mapping, path: Path) -> Path:
    """Per method, the students' relearning area against their distillation steps, with the fitted line."""
    lines = [(m, cmp.alpha_line(results, m)) for m in methods(results)]
    lines = [(m, line) for m, line in lines if line is not None]
    n = max(len(lines), 1)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.6), squeeze=False)
        for ax, (m, line) in zip(axes[0], lines):
            ax.scatter(line["steps"], line["areas"], color=AREA_COLOUR, zorder=3)
            for a, s, y in zip(line["alphas"], line["steps"], line["areas"]):
                ax.annotate(f"alpha {a:g}", (s, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
            if line["fit_steps"]:
                slope, intercept, r2 = line["fit_steps"]
                xs = [min(line["steps"]), max(line["steps"])]
                ax.plot(xs, [intercept + slope * x for x in xs], color="0.4", linestyle="--",
                        label=f"fit, R$^2$ = {r2:.2f}")
                ax.legend(loc="upper right", frameon=False)
            ax.set(title=f"{m}: robustness vs compute", xlabel="distillation steps to criterion",
                   ylabel=area_axis(capability_of(results))["ylabel"])
        if not lines:
            _no_data(axes[0][0])
        fig.tight_layout()
        return _save(fig, path)


def plot_frontier(results: Mapping, path: Path) -> Path:
    """The retain against the forget metric after each attack strength of `comparisons.attack_steps`, one
    panel each, the non-dominated models joined (better: right and down for an accuracy, left and up for a
    cross-entropy)."""
    strengths, ms, cap = cmp.attack_steps(results), methods(results), capability_of(results)
    n = max(len(strengths), 1)
    # Each model is numbered beside its point and in the legend: a sweep's 25 names written out at their
    # points overlap, and its variants of one method share a colour and a marker.
    panels = [(step, cmp.points_at(results, step)) for step in strengths]
    number = {name: i for i, name in enumerate(dict.fromkeys(
        name for _, pts in panels for name, _, _ in pts), start=1)}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.0), squeeze=False, sharey=True)
        for ax, (step, pts) in zip(axes[0], panels):
            for name, x, y in pts:
                ax.scatter(x, y, color=colour(name), marker=marker(name, ms), s=40, zorder=3,
                           label=f"{number[name]}  {name}")
                ax.annotate(str(number[name]), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6)
            front = cmp.frontier(pts, cap)
            if len(front) > 1:
                ax.plot([p[1] for p in front], [p[2] for p in front], color="0.3", linewidth=1, zorder=2)
            ax.margins(x=0.25)
            ax.set(title=f"after {step} attack steps", xlabel=f"retain {cap.label}",
                   **bounds(cap))
        axes[0][0].set_ylabel(f"forget {cap.label} after the attack")
        if strengths:
            _legend_outside(axes[0][-1])
        else:
            _no_data(axes[0][0])
        fig.tight_layout()
        return _save(fig, path)
