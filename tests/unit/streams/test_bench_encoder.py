"""The encoder benchmark's GPU busy time: the union of the GPU's activity intervals."""

import pytest

from streams.bench_encoder import covered_us


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        ([], 0.0),
        ([(0.0, 5.0)], 5.0),
        ([(0.0, 5.0), (10.0, 12.0)], 7.0),  # a gap is idle time
        ([(0.0, 5.0), (2.0, 4.0)], 5.0),  # a copy during a kernel: counted once
        ([(3.0, 8.0), (0.0, 5.0), (7.0, 9.0)], 9.0),  # out of order, chained overlaps
        ([(0.0, 5.0), (5.0, 6.0)], 6.0),  # touching
    ],
)
def test_covered_us_is_the_length_of_the_union(intervals, expected):
    assert covered_us(intervals) == expected
