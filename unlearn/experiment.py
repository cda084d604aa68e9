"""The stages of the UNDO experiment on the arithmetic testbed, at full or quick budgets.

base and gold (data-filtered) pretraining -> unlearning with each method -> one teacher-logit cache
per unlearned teacher -> UNDO students at each alpha (alpha = 1: fresh init, Unlearn-and-Distill)
-> the relearning attack on every model. Stage output directories sit side by side in the run
directory under the names the single-stage commands use by default (base, unlearned-maxent,
cache-maxent, undo-maxent-alpha1, ...), so `launch/distill.py` alone finds the demo teacher in runs/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unlearn.pipeline import Stage

# Budgets. Full: the settings the README's results come from. Quick: a smoke test of every stage
# (a few minutes on 2 CPU cores; the models learn little, so its numbers mean nothing).
FULL = {
    "pretrain": ["--eval-every", "0"],  # only the final evaluation: the models are scored again below
    "unlearn": [],
    "precompute": ["--rows", "38400"],  # one epoch of a student's full budget: 1,200 steps x 32 rows
    "distill": ["--eval-every", "100"],
    "relearn": ["--lrs", "1e-4,3e-4,1e-3,3e-3", "--steps", "100", "--eval-every", "20", "--eval-per-op", "100"],
}
QUICK = {
    "pretrain": ["--steps", "120", "--eval-every", "0", "--save-every", "60", "--final-eval-per-format", "10"],
    "unlearn": ["--steps", "6", "--final-eval-per-format", "10", "--eval-per-format", "4"],
    "precompute": ["--rows", "2048", "--records-per-shard", "512"],  # 2 shards per rank
    "distill": ["--steps", "40", "--eval-every", "20", "--save-every", "20", "--eval-per-format", "10",
                "--final-eval-per-format", "10"],
    "relearn": ["--lrs", "1e-3,3e-3", "--steps", "10", "--eval-every", "5", "--eval-per-op", "20"],
}
ATTACK_EVAL = "held-out forget-operation equations"


@dataclass
class Settings:
    out: Path
    methods: list[str]
    alphas: list[float]
    quick: bool = False
    retain_gap: float = 0.03
    seed: int = 0  # of every training stage (init, noise, data order); the attack keeps its own grid
    pareto: bool = False  # also each method at the other values of its PARETO_GRID, each attacked

    @property
    def budget(self) -> dict[str, list[str]]:
        return QUICK if self.quick else FULL


def _seeded(budget: dict[str, list[str]], seed: int) -> dict[str, list[str]]:
    """The budgets with `--seed` for the training stages (seed 0 adds nothing: the default, unchanged runs)."""
    if seed == 0:
        return budget
    return {stage: [*args, "--seed", str(seed)] if stage != "relearn" else args for stage, args in budget.items()}


def student_args(alpha: float) -> list[str]:
    """Per alpha: beta and LR as in the paper's arithmetic setting (a fresh init takes a larger LR)."""
    if alpha == 1.0:
        return ["--beta", "1.0", "--lr", "2e-3", "--min-lr", "2e-4"]
    return ["--beta", "0.1", "--lr", "1e-3", "--min-lr", "1e-4"]


def pareto_variants(s: Settings, m: str) -> list[tuple[str, str]]:
    """(model name, --hp setting) of method m at each value of its grid other than its default (the
    default is the method's main model); at quick budgets the first such value only (a smoke test)."""
    if not s.pareto:
        return []
    from unlearn.methods import get_method

    method = get_method(m)
    key, values = method.PARETO_GRID
    default = getattr(method.Hparams(), key)
    others = [v for v in values if v != default]
    return [(f"unlearned:{m}:{key}={v:g}", f"{key}={v:g}") for v in (others[:1] if s.quick else others)]


def model_dirs(s: Settings) -> dict[str, Path]:
    """Every model the experiment makes, by its name in results.json."""
    dirs = {"base": s.out / "base", "gold": s.out / "gold"}
    for m in s.methods:
        dirs[f"unlearned:{m}"] = s.out / f"unlearned-{m}"
        for name, setting in pareto_variants(s, m):
            dirs[name] = s.out / "pareto" / f"unlearned-{m}-{setting.replace('=', '')}"
        for a in s.alphas:
            dirs[f"undo:{m}:alpha={a:g}"] = s.out / f"undo-{m}-alpha{a:g}"
    return dirs


def relearn_file(s: Settings, name: str) -> Path:
    return s.out / "relearn" / (model_dirs(s)[name].name + ".json")


def build_stages(s: Settings) -> list[Stage]:
    b, dirs = _seeded(s.budget, s.seed), model_dirs(s)
    stages = [Stage("base", "launch/pretrain.py", dirs["base"], b["pretrain"]),
              Stage("gold", "launch/pretrain.py", dirs["gold"], ["--filter-forget", *b["pretrain"]])]
    for m in s.methods:
        teacher = dirs[f"unlearned:{m}"]
        stages.append(Stage(f"unlearned:{m}", "launch/unlearn.py", teacher,
                            ["--model", str(dirs["base"]), "--method", m, *b["unlearn"]], ["base"]))
        for name, setting in pareto_variants(s, m):
            stages.append(Stage(name, "launch/unlearn.py", dirs[name], ["--model", str(dirs["base"]), "--method", m,
                                                                         "--hp", setting, *b["unlearn"]], ["base"]))
        if not s.alphas:
            continue
        cache = s.out / f"cache-{m}"
        stages.append(Stage(f"cache:{m}", "launch/precompute.py", cache, ["--teacher", str(teacher), *b["precompute"]],
                            [f"unlearned:{m}"]))
        for a in s.alphas:
            stages.append(Stage(f"undo:{m}:alpha={a:g}", "launch/distill.py", dirs[f"undo:{m}:alpha={a:g}"],
                                ["--teacher", str(teacher), "--cache", str(cache), "--alpha", f"{a:g}",
                                 "--retain-gap", f"{s.retain_gap:g}", *student_args(a), *b["distill"]],
                                [f"unlearned:{m}", f"cache:{m}"]))
    for name, d in dirs.items():
        stages.append(Stage(f"relearn:{name}", "launch/relearn.py", relearn_file(s, name),
                            ["--model", str(d), *b["relearn"]], [name]))
    return stages
