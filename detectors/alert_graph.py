"""The co_action alert graph: its edges and connected components under insertions and deletions.

Edges come and go at every evaluation (weights cross the cut, pairs expire, the chance test
flips); rebuilding a union-find over the whole graph at every deletion cost most of a replay.
Components are kept explicitly instead: an insertion merges the smaller component into the
larger, deletions re-walk only the components they cut (once per evaluation, however many
edges left), and an account without edges leaves. Each component remembers its size when it was last examined
(``evald``; a merge keeps the larger, a split takes the largest of its members' ``seen``), so
"new, or grown by a fraction since last examined" survives merges and splits.
"""

from __future__ import annotations

from typing import Any


class AlertGraph:
    def __init__(self) -> None:
        self.adj: dict[str, dict[str, int]] = {}  # account -> account -> edge key
        self.comp: dict[str, int] = {}  # account -> component id
        self.members: dict[int, set[str]] = {}
        self.evald: dict[int, int] = {}  # component -> its size when last examined
        self.seen: dict[str, int] = {}  # account -> size of its component when last examined
        self.changed: set[int] = set()  # components made or changed since the last take()
        self._next = 0

    def join(self, a: str, b: str, key: int) -> None:
        for x, y in ((a, b), (b, a)):
            self.adj.setdefault(x, {})[y] = key
        ca, cb = self.comp.get(a), self.comp.get(b)
        if ca is None and cb is None:
            self._new({a, b}, 0)
        elif ca is None or cb is None:
            c = cb if ca is None else ca
            x = a if ca is None else b
            self.members[c].add(x)  # type: ignore[index]
            self.comp[x] = c  # type: ignore[assignment]
            self.changed.add(c)  # type: ignore[arg-type]
        elif ca != cb:
            big, small = (ca, cb) if len(self.members[ca]) >= len(self.members[cb]) else (cb, ca)
            for x in self.members[small]:
                self.comp[x] = big
            self.members[big] |= self.members.pop(small)
            self.evald[big] = max(self.evald.get(big, 0), self.evald.pop(small, 0))
            self.changed.discard(small)
            self.changed.add(big)

    def part(self, edges: list[tuple[str, str]]) -> None:
        """Remove ``edges``; each component they cut is re-walked once (into its pieces)."""
        cut: set[int] = set()
        for a, b in edges:
            for x, y in ((a, b), (b, a)):
                nb = self.adj[x]
                del nb[y]
                if not nb:
                    del self.adj[x]
            cut.add(self.comp[a])
        for c in sorted(cut):
            members = self.members[c]
            self._drop(c)
            while members:
                root = min(members)
                piece = self._walk(root) if root in self.adj else {root}
                members -= piece
                if len(piece) > 1:
                    self._new(piece, max(self.seen.get(m, 0) for m in piece))
                else:
                    del self.comp[root]
                    self.seen.pop(root, None)

    def _walk(self, root: str) -> set[str]:
        seen, todo, adj = {root}, [root], self.adj
        while todo:
            for y in adj[todo.pop()]:
                if y not in seen:
                    seen.add(y)
                    todo.append(y)
        return seen

    def _new(self, members: set[str], evald: int) -> None:
        c = self._next
        self._next += 1
        self.members[c] = members
        for m in members:
            self.comp[m] = c
        if evald:
            self.evald[c] = evald
        self.changed.add(c)

    def _drop(self, c: int) -> None:
        del self.members[c]
        self.evald.pop(c, None)
        self.changed.discard(c)

    def take(self) -> list[int]:
        """The components changed since the last call, in id order."""
        out = sorted(self.changed)
        self.changed = set()
        return out

    def examined(self, c: int) -> None:
        n = len(self.members[c])
        self.evald[c] = n
        for m in self.members[c]:
            self.seen[m] = n

    # -- state -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "next": self._next,
            "members": [[c, sorted(m)] for c, m in sorted(self.members.items())],
            "evald": sorted(self.evald.items()),
            "seen": sorted(self.seen.items()),
            "changed": sorted(self.changed),
        }

    def load(self, state: dict[str, Any], edges: list[tuple[str, str, int]]) -> None:
        for a, b, k in edges:
            for x, y in ((a, b), (b, a)):
                self.adj.setdefault(x, {})[y] = k
        self._next = state["next"]
        self.members = {c: set(m) for c, m in state["members"]}
        self.comp = {m: c for c, ms in self.members.items() for m in ms}
        self.evald, self.seen = dict(state["evald"]), dict(state["seen"])
        self.changed = set(state["changed"])
