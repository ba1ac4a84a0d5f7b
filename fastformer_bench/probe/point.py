"""A probe point: its axes (one table, as for speed points), its settings, and the preset grid it comes from."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import InitVar, asdict, dataclass, replace
from types import SimpleNamespace

from fastformer_bench import axes, impls
from fastformer_bench.probe import tasks
from fastformer_bench.ranges import Range, check_ranges

MIXERS = ("additive", "softmax")
#: the role of the axes that set a point's training budget (a settings value of the same name) rather than its task
BUDGET = "budget"
#: the implementation a mixer uses when the grid names none: the registry's defaults
DEFAULT_IMPL = {"additive": impls.DEFAULT_ADDITIVE, "softmax": impls.DEFAULT_SOFTMAX}

AXES: tuple[axes.Axis, ...] = (
    axes.Axis("task", str, axes.IMPLEMENTATION, "probe task", choices=tasks.NAMES),
    axes.Axis("mixer", str, axes.IMPLEMENTATION, "token mixer: additive or softmax attention", choices=MIXERS),
    axes.Axis("impl", str, axes.IMPLEMENTATION, "the mixer's implementation (default: eager / softmax_sdpa)",
              default=""),
    axes.Axis("columns", int, axes.SHAPE, "additive columns C (softmax: always 3)", default=3, minimum=2),
    axes.Axis("seq_len", int, axes.LENGTH, "sequence length N", minimum=2),
    axes.Axis("width", int, axes.SHAPE, "model width D", default=64, minimum=1),
    axes.Axis("heads", int, axes.SHAPE, "heads H", default=4, minimum=1),
    axes.Axis("layers", int, axes.SHAPE, "blocks", default=2, minimum=1),
    axes.Axis("pairs", int, axes.SHAPE, "key-value pairs (mqar, recall)", default=8, minimum=1),
    axes.Axis("vocab", int, axes.SHAPE, "vocabulary size (duplicate: at least 2N)", default=128, minimum=2),
    axes.Axis("seed", int, axes.SEED, "seed of the data, the initialisation and the batches", default=0),
    # Budget axes: a grid's own training budget, overriding the settings' value of the same name. At 0 (the
    # default) a point trains with the settings' value and its identity is what it was before the axis existed.
    axes.Axis("steps", int, BUDGET, "training steps (0: the settings' steps)", default=0, minimum=0),
    axes.Axis("max_steps", int, BUDGET, "the cap an inconclusive cell is extended to (0: the settings')",
              default=0, minimum=0),
)
BY_NAME = {axis.name: axis for axis in AXES}
NAMES = tuple(BY_NAME)
#: the axes only probe points have: their command-line overrides (the others exist for speed points already)
OWN = ("task", "mixer", "layers", "pairs", "vocab", "steps")
#: budget axes, each overriding the settings value it is named after when not 0
BUDGETS = tuple(axis.name for axis in AXES if axis.role == BUDGET)


@dataclass(frozen=True)
class ProbePoint:
    task: str
    mixer: str
    seq_len: int
    impl: str = ""
    columns: int = 3
    width: int = 64
    heads: int = 4
    layers: int = 2
    pairs: int = 8
    vocab: int = 128
    seed: int = 0
    steps: int = 0
    max_steps: int = 0

    def __post_init__(self) -> None:
        for axis in AXES:
            axis.check(getattr(self, axis.name))
        if self.impl:
            family = impls.get(self.impl).family  # ValueError for an unknown name
            wanted = impls.ADDITIVE if self.mixer == "additive" else impls.SOFTMAX
            if family != wanted:
                raise ValueError(f"implementation {self.impl!r} is {family}, not a {self.mixer} mixer.")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}.")
        if self.mixer == "softmax" and self.columns != 3:
            raise ValueError("softmax attention has exactly three columns (q, k, v).")
        tasks.check(self.task, self.seq_len, self.vocab, self.pairs)

    @property
    def implementation(self) -> str:
        return self.impl or DEFAULT_IMPL[self.mixer]

    def params(self) -> dict:
        """The axes that make the point (its identity): budget axes only where the grid set them, so a point
        trained with the settings' budget keeps the id it had before budget axes existed."""
        found = {**asdict(self), "impl": self.implementation}
        return {k: v for k, v in found.items() if k not in BUDGETS or v != BY_NAME[k].default}

    def budget(self, settings: ProbeSettings) -> ProbeSettings:
        """The settings this point trains with: ``settings`` with the point's budget axes in place of their values."""
        changes = {name: getattr(self, name) for name in BUDGETS if getattr(self, name) != BY_NAME[name].default}
        return replace(settings, **changes) if changes else settings

    @property
    def point_id(self) -> str:
        blob = json.dumps({"kind": "probe", **self.params()}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def label(self) -> str:
        extra = f" pairs={self.pairs}" if self.task in ("mqar", "recall") else ""
        columns = f" C={self.columns}" if self.mixer == "additive" else ""
        budget = "".join(f" {name}={getattr(self, name)}" for name in BUDGETS if getattr(self, name))
        return f"{self.task} {self.mixer}{columns} N={self.seq_len} D={self.width}{extra}{budget} seed={self.seed}"


#: each numeric setting's range: counts from 1, rates and shares above 0, weight decay from 0; 0 for max_steps
#: and eval_every is "off" (no extension, no early stop)
_RANGES = {"steps": Range(int, 1), "batch_tokens": Range(int, 1), "eval_examples": Range(int, 1),
           "val_examples": Range(int, 1), "threads": Range(int, 1), "workers": Range(int, 1),
           "max_steps": Range(int, 0), "eval_every": Range(int, 0), "bar": Range(float, 0.0, False),
           "weight_decay": Range(float, 0.0), "topic_share": Range(float, 0.0, False),
           "time_limit_s": Range(float, 0.0, False)}


@dataclass(frozen=True)
class ProbeSettings:
    """How every probe point trains: a step budget, learning rates to sweep, AdamW, a validation split that picks
    the rate, a held-out test set, the control's bar and the cap an inconclusive cell is extended to; each value
    range-checked (docs/probe.md §3)."""

    steps: int = 400
    #: tokens per training batch: batch = max(1, batch_tokens // N) sequences, so every N sees as many tokens
    batch_tokens: int = 4096
    #: peak learning rates: every point trains once per rate; validation accuracy picks one per point
    lrs: tuple[float, ...] = (3e-3,)
    weight_decay: float = 0.01
    #: held-out test sequences (the record's accuracy) and validation sequences (which pick the rate)
    eval_examples: int = 512
    val_examples: int = 256
    threads: int = 1
    #: points trained at once, each in its own process with ``threads`` threads
    workers: int = 1
    #: share of a topic sequence's tokens drawn from its class's topic words
    topic_share: float = 0.25
    #: a point still training after this long is stopped and recorded ``timeout``
    time_limit_s: float = 600.0
    #: the accuracy the control must reach on every seed for a cell to be conclusive
    bar: float = 0.95
    #: the most steps an inconclusive cell is extended to (steps doubled while they stay <= it); 0 or a value
    #: below a point's steps: no extension
    max_steps: int = 0
    #: validation every this many steps, stopping a run whose validation accuracy is 100 %; 0: never
    eval_every: int = 0
    #: the single learning rate of settings written before ``lrs`` (an old run.json): read as ``lrs = [lr]``
    lr: InitVar[float | None] = None

    def __post_init__(self, lr: float | None) -> None:
        if lr is not None:  # an old run.json's one rate, checked under its own name
            check_ranges(SimpleNamespace(lr=lr), {"lr": Range(float, 0.0, False)})
            object.__setattr__(self, "lrs", (lr,))
        lrs = self.lrs
        if isinstance(lrs, (int, float)) or not isinstance(lrs, (list, tuple)) or not lrs:
            raise ValueError(f"setting lrs must be a non-empty list of learning rates, got {lrs!r}.")
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0 or x == float("inf")
               for x in lrs):
            raise ValueError(f"setting lrs must hold learning rates > 0, got {list(lrs)!r}.")
        if len(set(lrs)) != len(lrs):
            raise ValueError(f"setting lrs must not repeat a rate, got {list(lrs)!r}.")
        object.__setattr__(self, "lrs", tuple(float(x) for x in lrs))
        check_ranges(self, _RANGES)
        if self.topic_share >= 1:
            raise ValueError(f"setting topic_share is a share below 1, got {self.topic_share!r}.")
        if self.bar > 1:
            raise ValueError(f"setting bar is an accuracy of at most 1, got {self.bar!r}.")

    @property
    def cap(self) -> int:
        """The most steps a cell trains for after its extensions."""
        return max(self.max_steps, self.steps)

    def batch_for(self, seq_len: int) -> int:
        return max(1, self.batch_tokens // seq_len)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def expand(grids: list[dict], overrides: dict[str, list] | None = None) -> list[ProbePoint]:
    """The points of a probe preset's grids in order, without duplicates (ValueError for an impossible one)."""
    points, seen = [], set()
    for grid in grids:
        unknown = set(grid) - set(NAMES)
        if unknown:
            raise ValueError(f"unknown probe axes {sorted(unknown)}; known: {', '.join(NAMES)}.")
        spec = {**{a.name: [a.default] for a in AXES if a.default is not None}, **grid, **(overrides or {})}
        missing = [name for name in NAMES if name not in spec]
        if missing:
            raise ValueError(f"a probe grid must name {', '.join(missing)}.")
        for combo in itertools.product(*(spec[name] for name in NAMES)):
            params = dict(zip(NAMES, combo))
            if params["mixer"] == "softmax" and params["columns"] != 3:
                continue  # a columns sweep applies to the additive mixer only
            point = ProbePoint(**params)
            if point.point_id not in seen:
                seen.add(point.point_id)
                points.append(point)
    return points


def overrides(args) -> dict[str, list]:
    """Probe-axis overrides from the CLI (``--task`` etc., and the shared ``--seq-len`` ... flags)."""
    found = {}
    for name in NAMES:
        text = getattr(args, f"axis_{name}", None)
        if text is not None:
            found[name] = BY_NAME[name].parse(text)
    return found
