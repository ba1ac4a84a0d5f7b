"""The one table of sweep axes: every place that needs "the parameters of a point" derives them from here.

``Problem`` validates its fields with it, presets take their grid keys and defaults from it, the CLI its
override flags and parsers, the gate its pairing keys, ``results`` its identity fields and the report its
grouping columns. Pure Python (no torch): the report and the results store import it.

Roles:
  implementation  which implementation runs the point
  slice           what makes two points incomparable in a figure (device, dtype, mode, scope, threads)
  shape           the problem size besides N (batch, width, heads, columns, masked)
  length          the swept sequence length N
  seed            the inputs' random seed
  method          how a point is measured: how a CUDA point is timed (timing, cache; a CPU point holds None and is
                  skipped if it names one) and the allocator condition of the measuring process (allocator)
"""

from __future__ import annotations

from dataclasses import dataclass

IMPLEMENTATION, SLICE, SHAPE, LENGTH, SEED, METHOD = "implementation", "slice", "shape", "length", "seed", "method"

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class Axis:
    name: str
    type: type  # int, str or bool
    role: str
    help: str
    #: the value a preset grid takes when it does not name this axis (None: the grid must name it)
    default: object = None
    #: the only values allowed (None: any value of the type that passes ``minimum``)
    choices: tuple | None = None
    #: the smallest allowed integer (None: any integer)
    minimum: int | None = None
    #: None is a value of this axis (for threads: "the run's setting"); a point holding None leaves the axis out
    #: of its parameters, so its point_id is the one it had before the axis existed
    optional: bool = False
    #: the command-line override's option name when it cannot be the axis's own (``run --threads`` is a setting)
    option: str | None = None

    @property
    def flag(self) -> str:
        return f"--{self.option or self.name.replace('_', '-')}"

    def check(self, value) -> None:
        """ValueError with one sentence unless ``value`` is a valid value of this axis."""
        if value is None and self.optional:
            return
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}.")
        elif self.type is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{self.name} must be an integer, got {value!r}.")
            if self.minimum is not None and value < self.minimum:
                what = "a positive integer" if self.minimum == 1 else f">= {self.minimum}"
                raise ValueError(f"{self.name} must be {what}, got {value!r}.")
        elif not isinstance(value, str):
            raise ValueError(f"{self.name} must be a name, got {value!r}.")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"unknown {self.name} {value!r}; known: {', '.join(map(str, self.choices))}.")

    def parse(self, text: str) -> list:
        """A comma-separated command-line value as a list of this axis's values (ValueError if malformed)."""
        values = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                raise ValueError(f"{self.flag} has an empty value in {text!r}.")
            if self.type is int:
                try:
                    values.append(int(item))
                except ValueError:
                    raise ValueError(f"{self.flag} expects integers, got {item!r}.") from None
            elif self.type is bool:
                if item.lower() not in _TRUE + _FALSE:
                    raise ValueError(f"{self.flag} expects true or false, got {item!r}.")
                values.append(item.lower() in _TRUE)
            else:
                values.append(item)
        return values


DTYPES = ("float64", "float32", "float16", "bfloat16")
DEVICES = ("cpu", "cuda")
MODES = ("fwd", "fwd_bwd")
SCOPES = ("core", "layer")
TIMINGS = ("graph", "launch")
CACHES = ("warm", "cold")
#: the allocator conditions (measure/allocator.py): a point that names none is measured as "warm", the harness's
#: own heap, and keeps its point_id; any other runs in a child process started with it
ALLOCATORS = ("plain", "warm", "thp", "jemalloc", "tcmalloc")
#: the shared library each preloaded condition puts in LD_PRELOAD, and the Debian package that installs it
ALLOCATOR_PRELOADS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
ALLOCATOR_PACKAGES = {"jemalloc": "libjemalloc2", "tcmalloc": "libtcmalloc-minimal4"}
#: read by torch's CPU allocator when it first allocates: 2 MiB-aligned blocks madvise(MADV_HUGEPAGE)d
THP_ENV = "THP_MEM_ALLOC_ENABLE"
#: what a user puts in a process's environment to get each condition other than plain: warm is the harness's
#: mallopt settings as glibc tunables (2^64 - 1 is SIZE_MAX, a heap never trimmed); torch reads
#: THP_MEM_ALLOC_ENABLE; ld.so finds a bare soname in LD_PRELOAD on the library path
REMEDY_ENV = {
    "warm": {"GLIBC_TUNABLES": f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={2**64 - 1}:"
                               "glibc.malloc.arena_max=1"},
    "thp": {THP_ENV: "1"},
    **{name: {"LD_PRELOAD": library} for name, library in ALLOCATOR_PRELOADS.items()},
}
#: the method axes' value for a CUDA point whose grid names none: device time without launch cost, L2 cold as
#: inside a model (a CPU point has neither: it is timed by the wall clock)
CUDA_DEFAULTS = {"timing": "graph", "cache": "cold"}

#: in this order: the report sorts and groups by role in table order
AXES: tuple[Axis, ...] = (
    Axis("impl", str, IMPLEMENTATION, "implementation name (see `fastformer-bench list`)"),
    Axis("device", str, SLICE, "cpu or cuda", default="cpu", choices=DEVICES),
    Axis("dtype", str, SLICE, "input dtype", default="float32", choices=DTYPES),
    Axis("mode", str, SLICE, "fwd (forward only) or fwd_bwd (forward + backward)", default="fwd", choices=MODES),
    Axis("scope", str, SLICE, "core (the attention alone) or layer (projections + core + output)",
         default="core", choices=SCOPES),
    # No default: a grid that does not name threads runs at the run's setting (Settings.threads) and keeps the
    # point_id it had before this axis existed (stored baselines and histories pair points by it).
    Axis("threads", int, SLICE, "CPU threads of the point's timed step (default: the run's --threads setting)",
         minimum=1, optional=True, option="threads-axis"),
    Axis("batch", int, SHAPE, "batch size B", default=1, minimum=1),
    Axis("seq_len", int, LENGTH, "sequence length N (tokens)", minimum=1),
    Axis("width", int, SHAPE, "width D = heads x head size", minimum=1),
    Axis("heads", int, SHAPE, "heads H", default=8, minimum=1),
    Axis("columns", int, SHAPE, "column count C (q, k, v is 3)", default=3, minimum=2),
    Axis("masked", bool, SHAPE, "a ragged padding mask (true) or none (false)", default=False),
    Axis("seed", int, SEED, "seed of the point's random inputs", default=0),
    # Optional like threads: a point that does not name them keeps the point_id it had before these axes existed.
    Axis("timing", str, METHOD, "CUDA points: graph (k calls replayed from a CUDA graph, device time) or launch "
         "(k calls enqueued from Python, one sync per sample); default graph", choices=TIMINGS, optional=True),
    Axis("cache", str, METHOD, "CUDA points: cold (a buffer of 2x the L2 written before every call) or warm; "
         "default cold", choices=CACHES, optional=True),
    Axis("allocator", str, METHOD, "the measuring process's allocator: plain (the C library's defaults, as a user's "
         "process), warm (the harness's kept heap; default), thp (torch's transparent huge pages), jemalloc or "
         "tcmalloc (preloaded)", choices=ALLOCATORS, optional=True),
)

BY_NAME = {axis.name: axis for axis in AXES}
NAMES = tuple(BY_NAME)


#: how a method axis reads beside a slice or setting ('CUDA-graph timing', 'cold L2', 'plain allocator')
_METHOD_WORDS = {"timing": {"graph": "CUDA-graph timing", "launch": "launch timing"}, "cache": "{} L2",
                 "allocator": "{} allocator"}


def method_words(name: str, value) -> str:
    """A method axis' value in words, e.g. method_words('timing', 'graph') == 'CUDA-graph timing'."""
    words = _METHOD_WORDS.get(name, "{}")
    return words.get(value, f"{value} {name}") if isinstance(words, dict) else words.format(value)


def get(name: str) -> Axis:
    if name not in BY_NAME:
        raise ValueError(f"unknown axis {name!r}; known: {', '.join(NAMES)}.")
    return BY_NAME[name]


def names(*roles: str) -> list[str]:
    """Axis names with any of ``roles`` (all axes when none is given), in table order."""
    return [a.name for a in AXES if not roles or a.role in roles]


def defaults() -> dict:
    """Each axis's default, for the axes that have one."""
    return {a.name: a.default for a in AXES if a.default is not None}


def validate(params: dict) -> None:
    """ValueError (one sentence) for an unknown or missing axis or a value outside its axis."""
    unknown = sorted(set(params) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown axes {unknown}; known: {', '.join(NAMES)}.")
    for axis in AXES:
        if axis.name not in params and not axis.optional:
            raise ValueError(f"the axis {axis.name!r} needs a value.")
        axis.check(params.get(axis.name))


def add_overrides(parser, names) -> None:
    """One ``--axis V[,V...]`` option per axis in ``names`` on an argparse parser (dest ``axis_<name>``)."""
    for name in names:
        axis = get(name)
        parser.add_argument(axis.flag, dest=f"axis_{name}", metavar="V[,V...]",
                            help=f"override the preset's {name} axis: {axis.help} (comma-separated)")


def overrides(args) -> dict[str, list]:
    """The axis values an argparse namespace holds (see add_overrides), parsed; ValueError if one is malformed."""
    return {name: get(name).parse(getattr(args, f"axis_{name}")) for name in NAMES
            if getattr(args, f"axis_{name}", None) is not None}
