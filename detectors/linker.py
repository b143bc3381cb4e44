"""Cross-detector linking: one alert points at the others that flagged the same accounts.

A co_action group that is also a near_duplicate cluster is stronger evidence than either
alone. The linker keeps, for ``memory_s`` of event time, an index account → recent alerts
(latest revision per group). Each new alert gets ``related``: the alerts of *other*
detectors sharing at least ``min_shared_accounts`` of its accounts, most-shared first,
with the count and a sample of the shared accounts. Linking never changes an alert's id
(ids come from group and revision), so a consumer de-duplicates the same way.

The pipeline hands alerts over in a deterministic order, so ``related`` is deterministic.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from detectors.base import Alert

MAX_RELATED = 10
SAMPLE_SHARED = 5


@dataclass(frozen=True)
class _Ref:
    alert_id: str
    group_id: str
    type: str
    window_end: float
    accounts: tuple[str, ...]


class Linker:
    def __init__(self, memory_s: float, min_shared_accounts: int) -> None:
        self.memory_s = memory_s
        self.min_shared = min_shared_accounts
        self._by_group: dict[str, _Ref] = {}
        self._by_account: dict[str, set[str]] = {}  # account -> group ids
        self._order: deque[str] = deque()  # group ids, oldest window_end first (approx.)

    def link(self, alert: Alert) -> Alert:
        """``alert`` with ``related`` filled in; the alert is then indexed for later ones."""
        shared: Counter[str] = Counter()
        for account in alert.accounts:
            for gid in self._by_account.get(account, ()):
                if self._by_group[gid].type != alert.type:
                    shared[gid] += 1
        related: list[dict[str, Any]] = []
        members = set(alert.accounts)
        for gid, n in sorted(shared.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_RELATED]:
            if n < self.min_shared:
                break
            ref = self._by_group[gid]
            related.append(
                {
                    "alert_id": ref.alert_id,
                    "group_id": ref.group_id,
                    "type": ref.type,
                    "shared_accounts": n,
                    "sample": sorted(members.intersection(ref.accounts))[:SAMPLE_SHARED],
                }
            )
        self._add(_Ref(alert.alert_id, alert.group_id, alert.type, alert.window_end, alert.accounts))
        return dataclasses.replace(alert, related=tuple(related)) if related else alert

    def expire(self, watermark: float) -> None:
        """Forget alerts whose window ended more than ``memory_s`` before ``watermark``."""
        horizon = watermark - self.memory_s
        while self._order and self._by_group[self._order[0]].window_end < horizon:
            self._drop(self._order.popleft())

    def _add(self, ref: _Ref) -> None:
        if ref.group_id in self._by_group:
            self._drop(ref.group_id)
            self._order.remove(ref.group_id)
        self._by_group[ref.group_id] = ref
        self._order.append(ref.group_id)
        for account in ref.accounts:
            self._by_account.setdefault(account, set()).add(ref.group_id)

    def _drop(self, group_id: str) -> None:
        ref = self._by_group.pop(group_id)
        for account in ref.accounts:
            groups = self._by_account[account]
            groups.discard(group_id)
            if not groups:
                del self._by_account[account]

    # -- state ---------------------------------------------------------------------
    def state(self) -> list[list[Any]]:
        return [
            [r.alert_id, r.group_id, r.type, r.window_end, list(r.accounts)]
            for r in (self._by_group[g] for g in self._order)
        ]

    def load_state(self, state: list[list[Any]]) -> None:
        for alert_id, group_id, type_, window_end, accounts in state:
            self._add(_Ref(alert_id, group_id, type_, window_end, tuple(accounts)))
