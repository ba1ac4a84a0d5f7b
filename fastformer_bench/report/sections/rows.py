"""How REPORT.md names a summary row: its slice and shape in words, its identity, its key table columns, and the
bullets that group sentences by slice and shape."""

from __future__ import annotations

from collections.abc import Callable

from fastformer_bench import axes


def threads(row: dict) -> str:
    count = row.get("threads")
    return f"{count} thread{'s' if count != 1 else ''}" if count else "threads not recorded"


def slice_of(row: dict) -> str:
    """e.g. 'cpu float32 fwd core 2 threads', 'cuda bfloat16 fwd core 16 threads launch timing warm L2': the row's
    slice axes in words, then how it was timed where it says (a CPU row names no timing or cache)."""
    return " ".join(threads(row) if k == "threads" else axes.method_words(k, row[k])
                    for k in axes.names(axes.SLICE, axes.METHOD) if k in row)


def shape_of(row: dict) -> str:
    """e.g. 'B = 4, C = 3, masked': the row's shape beside N and the width."""
    parts = [f"B = {row['batch']}"] if "batch" in row else []
    parts += [f"C = {row['columns']}"] if row.get("columns") else []
    return ", ".join(parts + (["masked"] if row.get("masked") else []))


def identity(row: dict) -> tuple:
    """What tells two fits apart: slice, implementation and shape."""
    return tuple(row.get(k) for k in axes.names(axes.SLICE, axes.METHOD, axes.IMPLEMENTATION, axes.SHAPE))


def key_columns(row: dict) -> dict:
    """The table columns that say which slice, implementation and shape a row is."""
    return {"slice": slice_of(row), "impl": row["impl"], "B": row.get("batch", "-"), "D": row.get("width", "-"),
            "H": row.get("heads", "-"), "C": row.get("columns") or "-", "masked": "yes" if row.get("masked") else "no"}


def grouped(rows: list[dict], sentence: Callable[[dict], str]) -> list[str]:
    """One bullet per slice and shape, the sentences about it nested below."""
    out, header = [], None
    for row in sorted(rows, key=lambda r: (slice_of(r), shape_of(r))):
        if f"{slice_of(row)}, {shape_of(row)}" != header:
            header = f"{slice_of(row)}, {shape_of(row)}"
            out.append(f"- {header}:")
        out.append(f"  - {sentence(row)}")
    return out
