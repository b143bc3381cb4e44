"""grow_ring: the live items keep their sequence numbers' slots after growth, nothing else survives."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sketches.ring import grow_ring


@given(st.integers(1, 64), st.integers(0, 10_000), st.data())
def test_growing_keeps_every_live_item_at_its_new_slot(cap, head, data):
    live = data.draw(st.integers(0, cap))
    needed = data.draw(st.integers(live, 4 * cap + 1))
    seqs = np.arange(head, head + live)
    values = np.full((cap, 3), -1, dtype=np.int64)
    values[seqs % cap] = np.stack([seqs, 2 * seqs, 3 * seqs], axis=1)
    flags = np.zeros(cap, dtype=bool)
    flags[seqs % cap] = True
    grown = grow_ring((values, flags), head, head + live, needed)
    if needed <= cap:
        assert grown is None
        return
    assert grown is not None
    new_values, new_flags = grown
    new_cap = new_values.shape[0]
    assert new_cap == new_flags.shape[0] >= needed and new_cap // cap & (new_cap // cap - 1) == 0  # doubled
    assert new_cap // 2 < needed  # no more than needed
    assert (new_values[seqs % new_cap] == np.stack([seqs, 2 * seqs, 3 * seqs], axis=1)).all()
    assert new_flags.sum() == live and new_flags[seqs % new_cap].all()
    dead = np.setdiff1d(np.arange(new_cap), seqs % new_cap)
    assert (new_values[dead] == 0).all()
