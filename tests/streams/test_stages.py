"""The work topic's frames and the cut of a batch into frames (no broker needed)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.stages import chunks, pack_frames, unpack_frames

messages = st.lists(st.tuples(st.integers(0, 2**62), st.none() | st.binary(max_size=20), st.binary(max_size=200)),
                    min_size=1, max_size=30)  # fmt: skip


@given(messages)
def test_frames_give_back_the_offsets_keys_and_values(msgs: list[tuple[int, bytes | None, bytes]]) -> None:
    offsets, keys, values = (list(x) for x in zip(*msgs))
    assert unpack_frames(pack_frames(offsets, keys, values)) == (offsets, keys, values)


@given(st.lists(st.integers(0, 100), min_size=1, max_size=50), st.integers(1, 150))
def test_chunks_cover_the_run_in_order_within_the_limit(sizes: list[int], limit: int) -> None:
    cuts = chunks(sizes, limit)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(sizes)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
    for lo, hi in cuts:
        assert hi > lo
        assert sum(sizes[lo:hi]) <= limit or hi - lo == 1  # only a value alone may pass the limit
