"""Histogram bounds: the 1-2.5-5 series per decade, exact decimals (the `le` labels dashboards read)."""

from __future__ import annotations

from ollama_optimizer.buckets import decades


def test_decades_are_the_one_two_and_a_half_five_series_in_short_decimals() -> None:
    assert [repr(b) for b in decades(0.0001, 0.1)] == [
        "0.0001",
        "0.00025",
        "0.0005",
        "0.001",
        "0.0025",
        "0.005",
        "0.01",
        "0.025",
        "0.05",
        "0.1",
    ]


def test_decades_start_and_end_inside_a_decade() -> None:
    assert decades(0.0025, 5.0) == (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
    assert decades(3.0, 40.0) == (5.0, 10.0, 25.0)
