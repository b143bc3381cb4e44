"""Mergeable, serialisable, deterministic sketches (numpy; no Faust or Kafka).

Every sketch follows :class:`sketches.protocol.Sketch`: batch update, ``merge``,
``copy``, ``to_bytes``/``from_bytes`` (versioned header carrying the parameters) and
``nbytes``. Hashing is seeded and 64-bit (:mod:`sketches.hashing`), never Python's
salted ``hash()``, so state is identical across processes and restarts.
"""
