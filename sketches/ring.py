"""Ring buffers indexed by sequence number: item ``s`` sits in slot ``s % capacity``.

Items live in a window ``[head, next)`` of sequence numbers; the capacity grows (doubling)
only when a batch would not fit beside the live items, so memory follows the number of live
items, not the stream. Shared by :class:`sketches.lsh.WindowedLSH` and the near_duplicate
detector's signature ring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def grow_ring(arrays: Sequence[np.ndarray], head: int, nxt: int, needed: int) -> list[np.ndarray] | None:
    """``arrays`` (rings of one capacity, the first axis) grown by doubling to hold ``needed``
    items, the live items ``[head, nxt)`` moved to their new slots and every other slot
    zeroed; None if they already hold that many."""
    cap = arrays[0].shape[0]
    if needed <= cap:
        return None
    new_cap = cap
    while new_cap < needed:
        new_cap *= 2
    seqs = np.arange(head, nxt)
    old, new = seqs % cap, seqs % new_cap
    out = []
    for arr in arrays:
        grown = np.zeros((new_cap,) + arr.shape[1:], dtype=arr.dtype)
        grown[new] = arr[old]
        out.append(grown)
    return out
