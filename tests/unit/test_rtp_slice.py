"""Each worker's share of the profile's RTP range: disjoint, even-aligned, inside it."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from hitl_sip.worker.service import rtp_slice


@given(st.integers(1024, 60000), st.integers(0, 5000), st.integers(1, 16))
def test_the_shares_are_disjoint_even_and_inside_the_range(start: int, width: int,
                                                            count: int) -> None:
    end = min(65535, start + width)
    shares = [rtp_slice(start, end, i, count) for i in range(count)]
    if shares[0] == (start, end):  # too small to share: every worker takes the whole range
        assert len(set(shares)) == 1
        return
    for first, last in shares:
        assert start <= first <= last <= end
        assert first % 2 == 0 and (last - first + 1) % 2 == 0 and last - first + 1 >= 8
    for (_, last), (first, _) in itertools.pairwise(shares):
        assert last < first


def test_two_workers_split_the_stock_range() -> None:
    assert rtp_slice(20000, 20999, 0, 2) == (20000, 20499)
    assert rtp_slice(20000, 20999, 1, 2) == (20500, 20999)
    assert rtp_slice(20000, 20009, 1, 2) == (20000, 20009)  # 5 ports each: shared
