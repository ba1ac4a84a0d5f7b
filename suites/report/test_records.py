"""The record contract: schema 2 carries the implementation facts; schema-1 results stay readable, upgraded."""

from __future__ import annotations

import json

import pytest
from testkit.synthetic_results import FACTS, synthetic_records, write_results

from fastformer_bench import axes, results
from fastformer_bench.results import IMPL_FACTS, ResultsError, new_record, read_points


def _as_schema1(record: dict) -> dict:
    """What the harness wrote before schema 2: no implementation facts, no quantities."""
    old = {k: v for k, v in record.items() if k not in (*IMPL_FACTS, "quantities", "compute_dtype", "settings_hash")}
    return {**old, "schema": 1}


def test_identity_and_required_fields_derive_from_the_axis_table():
    for name in axes.names(axes.IMPLEMENTATION, axes.SLICE, axes.LENGTH, axes.SHAPE):
        # an optional axis (threads: older writers' records may lack it) is identity, never required to read one
        assert name in results.IDENTITY and (name in results.REQUIRED) != axes.get(name).optional
    # every axis is a field; the seed is an input, not identity (the point_id covers it)
    assert set(axes.NAMES) <= set(new_record()) and "seed" not in results.IDENTITY
    assert set(IMPL_FACTS) <= set(results.IDENTITY) and set(results.REQUIRED) <= set(results.FIELDS)
    assert {"compute_dtype", "settings_hash"} <= set(results.IDENTITY) - set(results.REQUIRED)


def test_new_record_has_every_field_and_its_own_quantities():
    a, b = new_record(impl="x"), new_record(impl="y")
    assert a["schema"] == results.SCHEMA == 2 and set(results.FIELDS) <= set(a)
    assert a["quantities"] == {} and a["quantities"] is not b["quantities"]
    assert all(a[name] is None for name in IMPL_FACTS)


def test_schema1_records_are_upgraded_with_the_facts_of_their_time(tmp_path):
    records = [_as_schema1(r) for r in synthetic_records()]
    records[0] = {**records[0], "energy_j": 2.5}  # schema 1 stored energy without saying the report shows it
    records.append({**records[1], "impl": "someone_unknown", "point_id": "unknown-1"})
    path = write_results(tmp_path, records) / "points.jsonl"
    by_id = {r["point_id"]: r for r in read_points(path)}
    for record in records[:-1]:
        got = by_id[record["point_id"]]
        assert {k: got[k] for k in IMPL_FACTS} == FACTS[record["impl"]]
        assert got["schema"] == 1  # filled on read, not recorded
    assert by_id[records[0]["point_id"]]["quantities"] == {
        "energy_j": {"label": "energy per call", "unit": "J", "per_token": True}}
    assert by_id[records[1]["point_id"]]["quantities"] == {}  # no energy measured there
    assert all(by_id["unknown-1"][k] is None for k in IMPL_FACTS)
    # the frozen table is read, not shared: editing one record's facts leaves the next read alone
    by_id[records[2]["point_id"]]["expected_exponent"].append(99)
    assert {r["point_id"]: r for r in read_points(path)}[records[2]["point_id"]]["expected_exponent"] == \
        FACTS[records[2]["impl"]]["expected_exponent"]


def test_schema1_and_schema2_records_read_together(tmp_path):
    new = synthetic_records()[:3]
    path = write_results(tmp_path, [_as_schema1(new[0]), *new[1:]]) / "points.jsonl"
    assert [r["schema"] for r in read_points(path)] == [1, 2, 2]


@pytest.mark.parametrize("missing", [*IMPL_FACTS, "quantities"])
def test_a_schema2_record_without_its_facts_is_rejected(tmp_path, missing):
    record = {k: v for k, v in synthetic_records()[0].items() if k != missing}
    write_results(tmp_path, [record])
    with pytest.raises(ResultsError, match=missing):
        read_points(tmp_path / "points.jsonl")


@pytest.mark.parametrize("schema", [0, 3, True, "2", None])
def test_unknown_schemas_are_rejected(tmp_path, schema):
    (tmp_path / "points.jsonl").write_text(json.dumps({**synthetic_records()[0], "schema": schema}) + "\n")
    with pytest.raises(ResultsError, match="schema"):
        read_points(tmp_path / "points.jsonl")


def test_the_frozen_schema1_table_ships_with_the_package():
    from fnmatch import fnmatch
    from pathlib import Path

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    table = json.loads(results.SCHEMA1_FACTS.read_text())
    assert all(set(facts) == set(IMPL_FACTS) for facts in table["impls"].values())
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    shipped = project["tool"]["setuptools"]["package-data"]["fastformer_bench"]
    inside = results.SCHEMA1_FACTS.relative_to(Path(results.__file__).parent).as_posix()
    assert any(fnmatch(inside, pattern) for pattern in shipped), (inside, shipped)
    # the report renders tables with pandas.to_markdown, which needs tabulate: a plain install must bring it
    assert any(dep.startswith("tabulate") for dep in project["project"]["dependencies"])
