"""The stages of the UNDO experiment in a setting (arithmetic, or language: `unlearn.language_setting`), at
full or quick budgets.

base and gold (data-filtered) pretraining -> unlearning with each method -> one teacher-logit cache
per unlearned teacher (the language setting reads its small teacher online instead) -> UNDO students at
each alpha (alpha = 1: fresh init, Unlearn-and-Distill) -> the relearning attack on every model. Stage
output directories sit side by side in the run directory under the names the single-stage commands use
by default (base, unlearned-maxent, cache-maxent, undo-maxent-alpha1, ...), so `launch/distill.py` alone
finds the demo teacher in runs/.

With oracle matching (the paper's first experiment) the gold model is the teacher (the oracle, which never
learned the forget domain): its cache (or gold itself, read online), then two students trained on it for
the whole distillation budget, one initialised from base (alpha 0: the full model fine-tuned to match the
oracle), one fresh (alpha 1), each attacked alongside the oracle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from distill.engine import TrainConfig
from unlearn import language_setting
from unlearn.capability import Capability, of_task
from unlearn.methods import recipe as method_recipe
from unlearn.pipeline import Stage

# launch/pretrain.py's defaults: the arithmetic testbed's pretraining recipe. 2,500 steps, for a margin on
# every seed (bench/recipes.py): at 1,500 steps seed 1's base reached only 0.945 on - and its gold 0.940 and
# 0.938 on + and - (target 0.95); at 2,500 seed 1's scored 1.000 and 0.993 / 1.000.
PRETRAIN_DEFAULTS = TrainConfig(steps=2500, global_batch=32, micro_batch=16, lr=2e-3, min_lr=2e-4,
                                eval_every=250, save_every=250)
# The gold model (data-filtered: it never sees * or /) pretrains longer at full budgets: at 2,500 steps
# seed 2's gold reached only 0.932 on + equations (bench/recipes.py, 400 problems), at 3,500 1.000.
GOLD_STEPS = 3500

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
    "pretrain": ["--steps", "30", "--eval-every", "0", "--save-every", "15", "--final-eval-per-format", "10"],
    "unlearn": ["--steps", "6", "--final-eval-per-format", "10", "--eval-per-format", "4"],
    "precompute": ["--rows", "2048", "--records-per-shard", "512"],  # 2 shards per rank
    "distill": ["--steps", "40", "--eval-every", "20", "--save-every", "20", "--eval-per-format", "10",
                "--final-eval-per-format", "10"],
    "relearn": ["--lrs", "1e-3,3e-3", "--steps", "10", "--eval-every", "5", "--eval-per-op", "20"],
}
ATTACK_EVAL = "held-out forget-operation equations"
SETTINGS = ("arithmetic", "language")
RETAIN_GAP = {"arithmetic": 0.03, "language": 0.05}  # the stop criterion's default gap: absolute accuracy, or
# relative cross-entropy (the paper's "within 5% of the teacher")
ORACLE = {"oracle:base-init": "oracle-base-init", "oracle:fresh-init": "oracle-fresh-init"}


@dataclass
class Settings:
    out: Path
    methods: list[str]
    alphas: list[float]
    quick: bool = False
    retain_gap: float = 0.03
    seed: int = 0  # of every training stage (init, noise, data order); the attack keeps its own grid
    pareto: bool = False  # also each method at the other values of its PARETO_GRID, each attacked
    setting: str = "arithmetic"
    data: Path | None = None  # language: the corpora (language_setting.FILES) and their tokenizer
    tokenizer: Path | None = None
    oracle_matching: bool = False
    line: dict[str, list[float]] = field(default_factory=dict)  # method -> alphas it adds to `alphas` (--line)

    def alphas_of(self, m: str) -> list[float]:
        """Method m's students: every method's alphas, then the ones its alpha line adds."""
        return [*self.alphas, *(a for a in self.line.get(m, []) if a not in self.alphas)]

    @property
    def budget(self) -> dict[str, list[str]]:
        if self.setting == "language":
            return language_setting.QUICK if self.quick else language_setting.FULL
        return QUICK if self.quick else FULL

    @property
    def capability(self) -> Capability:
        from unlearn.tasks import TASKS

        return of_task(TASKS["text" if self.setting == "language" else "arithmetic"])

    @property
    def attack_eval(self) -> str:
        return language_setting.ATTACK_EVAL if self.setting == "language" else ATTACK_EVAL

    def flags(self, kind: str) -> list[str]:
        """The task flags of a stage kind: none for arithmetic (its defaults), the corpora for language."""
        if self.setting == "language":
            return language_setting.task_flags(kind, self.data, self.quick)
        return []

    def method_flags(self, method: str) -> list[str]:
        """A method's own unlearning flags in this setting: none for arithmetic, language's UNLEARN_LR."""
        return language_setting.unlearn_flags(method) if self.setting == "language" else []

    @property
    def online(self) -> bool:
        """Students read their teacher's outputs online rather than from a cache (language_setting.ONLINE)."""
        return self.setting == "language" and language_setting.ONLINE

    def pretrain_flags(self, gold: bool) -> list[str]:
        if self.setting == "language":
            return language_setting.pretrain_flags(gold, self.data, self.tokenizer, self.quick)
        if not gold:
            return []
        return ["--filter-forget", *([] if self.quick else ["--steps", str(GOLD_STEPS)])]  # quick: its own steps


def _seeded(budget: dict[str, list[str]], seed: int) -> dict[str, list[str]]:
    """The budgets with `--seed` for the training stages (seed 0 adds nothing: the default, unchanged runs)."""
    if seed == 0:
        return budget
    return {stage: [*args, "--seed", str(seed)] if stage in ("pretrain", "unlearn", "precompute", "distill") else args
            for stage, args in budget.items()}


# The students' peak LR: LR_PER_ALPHA x alpha (alpha 1: 2e-3), cosine to a tenth; alphas below
# MIN_LR_ALPHA (the paper's smallest, 0.1) take its LR. A student near its teacher needs smaller steps:
# at one LR for every partial alpha (1e-3) the first hundred steps undid alpha 0.2's head start (its init
# scored 0.345 retain accuracy against alpha 0.4's 0.035; both 0.41 at step 100), so it met the criterion
# after 400 steps against alpha 0.4's 300. Scaled (seed 0): 200, 400, 500, 700 and 1,100 steps at alphas
# 0.2-1, relearning areas 0.642, 0.561, 0.360, 0.128, 0.124 (README, "The paper's comparisons").
LR_PER_ALPHA, MIN_LR_ALPHA = 2e-3, 0.1
BASE_INIT_LR = ["--lr", "1e-3", "--min-lr", "1e-4"]  # oracle matching's base-initialised student (alpha 0)


def student_lr(alpha: float) -> list[str]:
    """--lr and --min-lr of a student at `alpha`: the peak grows with the perturbation."""
    peak = LR_PER_ALPHA * max(alpha, MIN_LR_ALPHA)
    return ["--lr", _short(peak), "--min-lr", _short(peak / 10)]


def _short(x: float) -> str:
    """2e-3, 1.2e-4: the LR as a stage key spells it (a respelling would rerun finished stages)."""
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def student_args(alpha: float) -> list[str]:
    """Per alpha: the noise scale beta and the LR."""
    return ["--beta", "1.0" if alpha == 1.0 else "0.1", *student_lr(alpha)]


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
        for a in s.alphas_of(m):
            dirs[f"undo:{m}:alpha={a:g}"] = s.out / f"undo-{m}-alpha{a:g}"
    if s.oracle_matching:
        dirs.update({name: s.out / d for name, d in ORACLE.items()})
    return dirs


def relearn_file(s: Settings, name: str) -> Path:
    return s.out / "relearn" / (model_dirs(s)[name].name + ".json")


def build_stages(s: Settings) -> list[Stage]:
    b, dirs, f = _seeded(s.budget, s.seed), model_dirs(s), s.flags
    pretrain = asdict(PRETRAIN_DEFAULTS)  # the defaults its flags leave in place: part of its stages' keys
    stages = [Stage("base", "launch/pretrain.py", dirs["base"], [*s.pretrain_flags(gold=False), *b["pretrain"]],
                    recipe=pretrain),
              Stage("gold", "launch/pretrain.py", dirs["gold"], [*s.pretrain_flags(gold=True), *b["pretrain"]],
                    recipe=pretrain)]
    for m in s.methods:
        teacher, defaults = dirs[f"unlearned:{m}"], method_recipe(m)
        unlearn = [*f("unlearn"), *b["unlearn"], *s.method_flags(m)]  # the method's model and its variants
        stages.append(Stage(f"unlearned:{m}", "launch/unlearn.py", teacher,
                            ["--model", str(dirs["base"]), "--method", m, *unlearn], ["base"], recipe=defaults))
        for name, setting in pareto_variants(s, m):
            stages.append(Stage(name, "launch/unlearn.py", dirs[name],
                                ["--model", str(dirs["base"]), "--method", m, "--hp", setting, *unlearn], ["base"],
                                recipe=defaults))
        alphas = s.alphas_of(m)
        if not alphas:
            continue
        cache_stages, targets, needs = _targets(s, b, m, teacher, f"unlearned:{m}")
        stages += cache_stages
        for a in alphas:
            stages.append(Stage(f"undo:{m}:alpha={a:g}", "launch/distill.py", dirs[f"undo:{m}:alpha={a:g}"],
                                [*targets, "--alpha", f"{a:g}", "--retain-gap", f"{s.retain_gap:g}",
                                 *student_args(a), *f("distill"), *b["distill"]], needs))
    if s.oracle_matching:
        stages += _oracle_stages(s, b, dirs)
    for name, d in dirs.items():
        stages.append(Stage(f"relearn:{name}", "launch/relearn.py", relearn_file(s, name),
                            ["--model", str(d), *f("relearn"), *b["relearn"]], [name]))
    return stages


def _targets(s: Settings, b: dict[str, list[str]], name: str, teacher: Path,
             teacher_stage: str) -> tuple[list[Stage], list[str], list[str]]:
    """(the cache stage, if any; distill's teacher flags; the stages a student waits for): the teacher's
    cache, or the teacher itself read online."""
    if s.online:
        return [], ["--teacher", str(teacher), "--online"], [teacher_stage]
    cache = s.out / f"cache-{name}"
    stage = Stage(f"cache:{name}", "launch/precompute.py", cache,
                  ["--teacher", str(teacher), *s.flags("precompute"), *b["precompute"]], [teacher_stage])
    return [stage], ["--teacher", str(teacher), "--cache", str(cache)], [teacher_stage, f"cache:{name}"]


def _oracle_stages(s: Settings, b: dict[str, list[str]], dirs: dict[str, Path]) -> list[Stage]:
    """Gold's targets, and two students matching them for the whole budget (--retain-gap -1: no early stop,
    so their loss curves run side by side): one initialised from base, one fresh."""
    cache_stages, targets, needs = _targets(s, b, "gold", dirs["gold"], "gold")
    common = [*targets, "--retain-gap", "-1", *s.flags("distill"), *b["distill"]]
    return [*cache_stages,
            Stage("oracle:base-init", "launch/distill.py", dirs["oracle:base-init"],
                  ["--student", str(dirs["base"]), *BASE_INIT_LR, *common], ["base", *needs]),
            Stage("oracle:fresh-init", "launch/distill.py", dirs["oracle:fresh-init"],
                  ["--alpha", "1", *student_args(1.0), *common], needs)]
