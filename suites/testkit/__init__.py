"""The tests' shared helpers and plugins, imported as ``testkit.<module>`` (pytest's ``pythonpath`` puts suites/
on the path; the ``test_impls`` fixture of suites/conftest.py gives child processes the same).

- attention_cases: the correctness tests' shapes, masks, inputs, implementations as params and comparisons
- synthetic_results: results with known answers, for the report tests (and a sample report by hand)
- plugin_impl, plugin_meter: a plugin implementation and plugin meters (one of them broken), each in one file
- imports: which modules a piece of code leaves imported, in a fresh interpreter
- plugin_faulty_impls: misbehaving implementations (wrong, out of memory, slow, aborting, ...) for ``test_impls``

The gate self-test's slowed candidates are no test helper: fastformer_bench/tools/slowed_impls.py.
"""
