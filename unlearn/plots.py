"""Paper-style figures for the UNDO report, and the accessors of the results dict that the report shares.

Each plot function takes the pipeline's results dict (shape in unlearn/report.py), writes one PNG and returns its
path. A model without the data a figure needs is left out of that figure: a partial run still gets all its figures.
Model names are `base`, `gold`, `unlearned:<method>` and `undo:<method>:alpha=<a>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the pipeline runs headless: no display backend may exist
import matplotlib.pyplot as plt

from unlearn.capability import Capability, capability_of

DPI = 150
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
}
MARKERS = "osD^v<>"  # one per method: colours already encode the kind of model
MAX_COLUMNS = 4  # panels per row: the seven methods of a comparison in one row are too wide to read
COMPUTE_COLOUR = "tab:green"
AREA_COLOUR = "tab:purple"


def method_of(name: str) -> str | None:
    """'maxent' for 'unlearned:maxent' and 'undo:maxent:alpha=1'; None for base, gold and the oracle students."""
    return name.split(":")[1] if name.startswith(("unlearned:", "undo:")) else None


def alpha_of(name: str) -> float | None:
    """The alpha of an 'undo:<method>:alpha=<a>' student; None for any other model."""
    return float(name.rsplit("=", 1)[1]) if name.startswith("undo:") else None


def methods(results: Mapping) -> list[str]:
    """Methods the setting lists or any model names, in first-seen order."""
    listed = list((results.get("setting") or {}).get("methods") or [])
    named = [method_of(name) for name in results.get("models") or {}]
    return list(dict.fromkeys(m for m in listed + named if m))


def ordered_models(results: Mapping) -> list[str]:
    """Model names as a reader expects them: base, gold, then per method the unlearned model and its students
    from alpha = 1 down."""
    ms = methods(results)

    def rank(name):
        if name in ("base", "gold"):
            return (0, ("base", "gold").index(name), False, 0.0)
        m, a = method_of(name), alpha_of(name)
        return (1, ms.index(m) if m in ms else len(ms), a is not None, -(a or 0.0))

    return sorted(results.get("models") or {}, key=rank)


def relearn_curve(model: Mapping) -> tuple[list, list]:
    """(steps, strongest attacker's forget metric), or two empty lists when the model has no usable curve. The
    curve is under the key the attack names in "metric" (forget_accuracy, forget_ce)."""
    relearn = model.get("relearn") or {}
    steps, acc = relearn.get("steps") or [], relearn.get(relearn.get("metric", "forget_accuracy")) or []
    return (list(steps), list(acc)) if steps and len(steps) == len(acc) else ([], [])


def final_relearned(model: Mapping) -> float | None:
    """The forget metric after the whole attack (its last eval step)."""
    acc = relearn_curve(model)[1]
    return acc[-1] if acc else None


def area_of(model: Mapping) -> float | None:
    return (model.get("relearn") or {}).get("area")


def colour(name: str):
    if name == "base":
        return "0.55"
    if name == "gold":
        return "black"
    if name.startswith("unlearned:"):
        return "tab:red"
    # Darker for larger alpha; the palest end of the map is unreadable on white, so it starts at 0.45.
    return plt.get_cmap("BuPu")(0.45 + 0.55 * min(max(alpha_of(name) or 0.0, 0.0), 1.0))


def marker(name: str, ms: list[str]) -> str:
    m = method_of(name)
    return MARKERS[ms.index(m) % len(MARKERS)] if m in ms else "o"


def bounds(cap: Capability) -> dict:
    """y limits for values of the capability: [0, 1] with a margin for an accuracy, free for a cross-entropy."""
    return {"ylim": (-0.02, 1.02)} if cap.bounded else {}


def metric_axis(cap: Capability, what: str) -> dict:
    """Label and limits of a y axis showing `what` ("forget", "retain") of the capability."""
    return {"ylabel": f"{what} {cap.label}", **bounds(cap)}


def area_axis(cap: Capability) -> dict:
    direction = "lower" if cap.higher_is_capable else "higher"
    return {"ylabel": f"relearning area ({direction} = more robust)", **bounds(cap)}


def plot_relearning(results: Mapping, path: Path) -> Path:
    """The forget metric against relearning steps, one line per model."""
    models, ms, cap = results.get("models") or {}, methods(results), capability_of(results)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for name in ordered_models(results):
            steps, acc = relearn_curve(models[name])
            if steps:
                ax.plot(steps, acc, label=name, color=colour(name), marker=marker(name, ms), markersize=4,
                        linestyle="--" if name == "gold" else "-")
        ax.set(xlabel="relearning steps", title="Relearning attack on the forget domain (strongest attacker)",
               **metric_axis(cap, "forget"))
        _legend_outside(ax)
        return _save(fig, path)


def plot_alpha_tradeoff(results: Mapping, path: Path) -> Path:
    """Per method, the students' relearning area and distillation steps against alpha."""
    models = results.get("models") or {}
    ms = [m for m in methods(results) if students_of(models, m)]
    with plt.rc_context(STYLE):
        fig, axes = panel_grid(len(ms), 5.4, 3.8)
        for ax, m in zip(axes, ms):
            _tradeoff_panel(ax, models, m, capability_of(results))
        if not ms:
            _no_data(axes[0])
        fig.tight_layout()
        return _save(fig, path)


def students_of(models: Mapping, method: str) -> list[tuple[float, Mapping]]:
    """(alpha, model) for the method's students, by increasing alpha."""
    found = [(alpha_of(n), models[n]) for n in models if n.startswith(f"undo:{method}:")]
    return sorted(found, key=lambda pair: pair[0])


def _tradeoff_panel(ax, models: Mapping, method: str, cap: Capability) -> None:
    students = students_of(models, method)
    areas = [(a, area_of(s)) for a, s in students if area_of(s) is not None]
    steps = [(a, s["compute"]["steps"]) for a, s in students if (s.get("compute") or {}).get("steps") is not None]
    if areas:
        ax.plot(*zip(*areas), marker="o", color=AREA_COLOUR, label="student relearning area")
    for ref, ref_colour in ((f"unlearned:{method}", colour(f"unlearned:{method}")), ("gold", colour("gold"))):
        area = area_of(models.get(ref) or {})
        if area is not None:
            ax.axhline(area, linestyle="--", linewidth=1, color=ref_colour, label=f"{ref} area")
    ax.set_xticks([a for a, _ in students])
    ax.set(xlabel="alpha (1 = fresh initialisation)", title=f"{method}: robustness vs distillation compute",
           **area_axis(cap))
    twin = ax.twinx()
    if steps:
        twin.plot(*zip(*steps), marker="s", linestyle=":", color=COMPUTE_COLOUR, label="distillation steps")
    twin.set_ylabel("distillation compute (steps)", color=COMPUTE_COLOUR)
    twin.set_ylim(bottom=0)
    twin.spines["right"].set_visible(True)
    twin.grid(False)  # one grid per panel: the left axis's
    handles, labels = (a + b for a, b in zip(ax.get_legend_handles_labels(), twin.get_legend_handles_labels()))
    if handles:  # below the panel: inside, it would hide points at either axis's top
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def panel_grid(n: int, width: float, height: float, **kw) -> tuple:
    """A figure of `n` panels (at least one), `width` x `height` inches each, at most MAX_COLUMNS a row, and
    its panels in reading order; the empty cells of the last row are hidden."""
    n = max(n, 1)
    columns = min(n, MAX_COLUMNS)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False, **kw)
    cells = list(axes.flat)
    for ax in cells[n:]:
        ax.set_visible(False)
    return fig, cells[:n]


def first_in_row(axes: list) -> list:
    """The panels of `panel_grid` that start a row: the ones that carry a shared y label."""
    return axes[::MAX_COLUMNS]


def _legend_outside(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    else:
        _no_data(ax)


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
