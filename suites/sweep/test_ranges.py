"""One range check for the speed sweep's and the probe's settings: the same sentence for the same mistake."""

from __future__ import annotations

import pytest

from fastformer_bench.point import Settings
from fastformer_bench.probe.point import ProbeSettings


@pytest.mark.parametrize(("make", "name"), [(Settings, "time_limit_s"), (ProbeSettings, "time_limit_s"),
                                            (Settings, "max_attempts"), (ProbeSettings, "steps")])
@pytest.mark.parametrize("value", [0, -1, float("nan"), True, "3"])
def test_a_value_out_of_range_is_one_sentence_naming_the_setting(make, name, value):
    with pytest.raises(ValueError, match=rf"^setting {name} must be [^.]+, got .+\.$"):
        make(**{name: value})


def test_the_boundaries_are_where_each_setting_says():
    assert ProbeSettings(weight_decay=0.0).weight_decay == 0.0  # no decay is a valid choice
    with pytest.raises(ValueError, match="setting lr must be > 0, got 0.0."):
        ProbeSettings(lr=0.0)
    with pytest.raises(ValueError, match="setting weight_decay must be >= 0, got -0.1."):
        ProbeSettings(weight_decay=-0.1)
    assert Settings(threads=None).threads is None and Settings(revisits=0).revisits == 0
    with pytest.raises(ValueError, match="setting threads must be an integer or none, got 1.5."):
        Settings(threads=1.5)
