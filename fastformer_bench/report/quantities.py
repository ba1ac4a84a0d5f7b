"""The quantities meters ask the report to show (a record's ``quantities``): energy, or any plugin meter's field.

Pure pandas, like ``analysis``: which fields to show, their ok points, and a table per field. Only ok points
count, and only where the record both declares the field and has a finite value for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fastformer_bench.report.analysis import SHAPE, SLICE, key_dict, num


def shown(frame: pd.DataFrame) -> dict[str, dict]:
    """field -> {label, unit, per_token}: what the meters of ok records asked to show, by field name.

    Where records declare one field differently, the first in the prepared order wins.
    """
    found: dict[str, dict] = {}
    for declared in frame.loc[frame["status"] == "ok", "quantities"]:
        for field, spec in (declared.items() if isinstance(declared, dict) else ()):
            found.setdefault(str(field), {"label": str(spec.get("label", field)), "unit": str(spec.get("unit", "")),
                                          "per_token": bool(spec.get("per_token", False))})
    return dict(sorted(found.items()))


def points(frame: pd.DataFrame, field: str) -> pd.DataFrame:
    """The ok points that declare ``field`` shown and have a finite value for it, with it in ``value``."""
    ok = frame[frame["status"] == "ok"]
    if field not in ok.columns:
        return ok.iloc[0:0].assign(value=pd.Series(dtype="float64"))
    declared = ok["quantities"].map(lambda q: isinstance(q, dict) and field in q).astype(bool)
    data = ok[declared].assign(value=pd.to_numeric(ok.loc[declared, field], errors="coerce").astype("float64"))
    return data[np.isfinite(data["value"])]


def table(frame: pd.DataFrame) -> list[dict]:
    """Each shown quantity per slice, implementation, shape and N: its median per call, and per token
    (per call / (B x N)) when its meter counts it per token. Empty when no record has any."""
    keys = SLICE + ["impl"] + SHAPE + ["seq_len"]
    out = []
    for field, spec in shown(frame).items():
        rows = []
        for key, g in points(frame, field).groupby(keys, sort=True):
            row = {**key_dict(keys, key), "points": len(g), "per_call": num(g["value"].median())}
            if spec["per_token"]:
                row["per_token"] = num(g["value"].median() / (row["batch"] * row["seq_len"]))
            rows.append(row)
        if rows:
            out.append({"field": field, **spec, "rows": rows})
    return out
