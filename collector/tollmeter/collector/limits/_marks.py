"""Fire-once bookkeeping for thresholds: one mark per limit, key, window and threshold."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tollmeter.collector.limits._model import Notice, NoticeKind
from tollmeter.collector.limits._rules import Counter, InFlight, Rule

__all__ = ["ThresholdMarks", "mark_of"]

_EPSILON = 1e-9
_SEPARATOR = "\x1f"


def mark_of(rule: str, key: tuple[str, ...], window: str, kind: NoticeKind, detail: str) -> str:
    """The name of what fires once: one limit, key, window and kind (and threshold)."""
    return _SEPARATOR.join((rule, *key, window, kind, detail))


class ThresholdMarks:
    """Which thresholds already fired. Not thread-safe: the engine holds its lock."""

    def __init__(self) -> None:
        self._marks: dict[str, tuple[str, float]] = {}

    def crossed(
        self, rule: Rule, key: tuple[str, ...], counter: Counter, now: float
    ) -> list[Notice]:
        """Notices for the thresholds the counter has reached that have not fired yet.

        Each carries its ``mark``, which the caller persists before telling anyone.
        """
        if isinstance(rule.window, InFlight):
            return []  # no window to fire once in; the status and metrics show it instead
        fraction = rule.window.used_fraction(counter)
        alert_at = rule.config.alert_at
        if fraction <= 1.0 + _EPSILON and (not alert_at or fraction + _EPSILON < alert_at[0]):
            return []
        window = rule.window.window_id(counter, now)
        keymap = dict(zip(rule.config.group_by, key, strict=True))
        reached: list[tuple[NoticeKind, float | None]] = [
            ("threshold_crossed", t) for t in alert_at if fraction + _EPSILON >= t
        ]
        if fraction > 1.0 + _EPSILON:
            reached.append(("limit_exceeded", None))
        notices = []
        for kind, threshold in reached:
            mark = mark_of(rule.name, key, window, kind, repr(threshold))
            if mark in self._marks:
                continue
            self._marks[mark] = (rule.name, now)
            notices.append(
                Notice(
                    kind=kind,
                    time=now,
                    limit=rule.name,
                    key=keymap,
                    tenant=keymap.get("tenant"),
                    threshold=threshold,
                    used=round(rule.config.limit * fraction, 6),
                    limit_value=rule.config.limit,
                    window=window,
                    mark=mark,
                )
            )
        return notices

    def claim(self, mark: str, rule: str, now: float) -> bool:
        """Set ``mark`` unless it is already set; whether this call set it."""
        if mark in self._marks:
            return False
        self._marks[mark] = (rule, now)
        return True

    def prune(self, rules: Mapping[str, Rule], now: float) -> None:
        """Forget marks of windows long closed, and of limits that no longer exist."""
        stale = [
            mark
            for mark, (name, marked_at) in self._marks.items()
            if name not in rules or marked_at + rules[name].window.retention_s <= now
        ]
        for mark in stale:
            del self._marks[mark]

    def restore(self, marks: Iterable[str], now: float) -> None:
        self._marks.update((m, (m.split(_SEPARATOR, 1)[0], now)) for m in marks)
