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
    _no_data,
    _save,
    area_axis,
    bounds,
    colour,
    first_in_row,
    marker,
    methods,
    panel_grid,
    plt,
    relearn_curve,
)

MAX_LEGEND_COLUMNS = 4  # of the frontier's numbered models, six or more a column


def plot_method_grid(results: Mapping, path: Path) -> Path:
    """One panel per method: the unlearned model, its Unlearn-and-Distill student and gold under the attack."""
    models, rows, cap = results.get("models") or {}, cmp.method_grid(results), capability_of(results)
    with plt.rc_context(STYLE):
        fig, axes = panel_grid(len(rows), 4.2, 3.6, sharey=True)
        for ax, row in zip(axes, rows):
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
        for ax in first_in_row(axes):
            ax.set_ylabel(f"forget {cap.label} (strongest attacker)")
        if not rows:
            _no_data(axes[0])
        fig.tight_layout()
        return _save(fig, path)


def plot_alpha_line(results: Mapping, path: Path) -> Path:
    """Per method, the students' relearning area against their distillation steps, with the fitted line."""
    lines = [(m, cmp.alpha_line(results, m)) for m in methods(results)]
    lines = [(m, line) for m, line in lines if line is not None]
    with plt.rc_context(STYLE):
        fig, axes = panel_grid(len(lines), 4.6, 3.6)
        for ax, (m, line) in zip(axes, lines):
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
            _no_data(axes[0])
        fig.tight_layout()
        return _save(fig, path)


def plot_frontier(results: Mapping, path: Path) -> Path:
    """The retain against the forget metric after each attack strength of `comparisons.attack_steps`, one
    panel each, the non-dominated models joined (better: right and down for an accuracy, left and up for a
    cross-entropy)."""
    strengths, ms, cap = cmp.attack_steps(results), methods(results), capability_of(results)
    # Each model is numbered beside its point and in the legend: a sweep's 25 names written out at their
    # points overlap, and its variants of one method share a colour and a marker.
    panels = [(step, cmp.points_at(results, step)) for step in strengths]
    number = {name: i for i, name in enumerate(dict.fromkeys(
        name for _, pts in panels for name, _, _ in pts), start=1)}
    with plt.rc_context(STYLE):
        fig, axes = panel_grid(len(strengths), 4.6, 4.0, sharey=True)
        for ax, (step, pts) in zip(axes, panels):
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
        for ax in first_in_row(axes):
            ax.set_ylabel(f"forget {cap.label} after the attack")
        fig.tight_layout()
        if number:
            _numbered_legend(fig, axes)
        else:
            _no_data(axes[0])
        return _save(fig, path)


def _numbered_legend(fig, axes: list) -> None:
    """One legend of every numbered model, below the panels and in columns: beside them, a sweep's 30-odd
    names make the figure several panels tall."""
    seen = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(MAX_LEGEND_COLUMNS, -(-len(seen) // 6)), frameon=False)
