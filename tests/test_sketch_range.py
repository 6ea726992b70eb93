"""The quantile sketch never reports a quantile outside the observed [min, max] (explain showed p95 > max)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tuner_service.sketch import LogHistogram


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.floats(0.001, 1e7, allow_nan=False), min_size=1, max_size=300),
    q=st.floats(0.0, 1.0),
    upper=st.booleans(),
    cap=st.sampled_from([5.0, 50.0, 2000.0]),
)
def test_quantiles_stay_within_the_observed_range(values: list[float], q: float, upper: bool, cap: float) -> None:
    sketch = LogHistogram(cap=cap)
    for value in values:
        sketch.add(value)
    restored = LogHistogram.from_json(sketch.to_json(), cap)  # persisted state keeps the range too
    for hist in (sketch, restored):
        assert min(values) <= hist.quantile(q, upper) <= max(values)


def test_the_reported_example_p95_is_not_above_the_max() -> None:
    sketch = LogHistogram()
    for value in (1512, 1798, 1739, 1600, 1700):
        sketch.add(value)
    assert sketch.quantile(0.95) <= sketch.max_value == 1798
    assert sketch.quantile(0.5) >= 1512
