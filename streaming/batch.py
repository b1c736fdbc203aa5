"""A micro-batch of events, sorted into what can be written and what goes to the dead letters.

Events are grouped per push source (one group per feature view), each group validated by the push's own
rules (`core.push.rows.validate_rows`: schema, types, the accepted event-time window). A bad event never
blocks the others: when a group fails, its rows are validated one by one and only the faulty ones leave.
Pure: no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from core.features.specs import ViewSpec
from core.push.rows import PushError, ValidRows, validate_rows
from core.push.service import PushPolicy
from streaming.events import Event, event_key

__all__ = ["DeadLetter", "DeadReason", "PreparedBatch", "ViewBatch", "prepare_batch"]

DeadReason = Literal["bad_event", "unknown_source", "invalid_row", "not_appendable", "offline_rejected"]
"""Why an event is a dead letter (a label of the dead-letter counter)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that cannot be written, and why (`kind` for metrics, `reason` for people)."""

    event: Event
    kind: DeadReason
    reason: str


@dataclass(frozen=True, slots=True)
class ViewBatch:
    """The valid events of one push source, in arrival order, with their rows in column form and keys."""

    push_source: str
    view: ViewSpec
    events: list[Event]
    valid: ValidRows
    keys: list[uuid.UUID]

    def only(self, positions: Sequence[int]) -> ViewBatch:
        """The events at `positions`, with their rows and keys."""
        valid = self.valid
        return ViewBatch(
            self.push_source,
            self.view,
            [self.events[i] for i in positions],
            ValidRows(
                view=valid.view,
                entity_ids=[valid.entity_ids[i] for i in positions],
                event_ts=[valid.event_ts[i] for i in positions],
                created=[valid.created[i] for i in positions],
                values={name: [column[i] for i in positions] for name, column in valid.values.items()},
            ),
            [self.keys[i] for i in positions],
        )


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A micro-batch: the groups to write and the dead letters."""

    groups: list[ViewBatch]
    dead: list[DeadLetter]


def _validate(
    view: ViewSpec, events: list[Event], *, now: datetime, policy: PushPolicy
) -> tuple[list[Event], ValidRows, list[DeadLetter]]:
    """The group's valid events and their rows; the faulty events as dead letters."""

    def check(rows: list[Event]) -> ValidRows:
        return validate_rows(
            view,
            [event.row or {} for event in rows],
            now=now,
            max_age_s=policy.max_age_s,
            clock_skew_s=policy.clock_skew_s,
        )

    try:
        return events, check(events), []
    except PushError:
        pass  # at least one bad row: find them one by one (rare), keep the rest
    good: list[Event] = []
    dead: list[DeadLetter] = []
    for event in events:
        try:
            check([event])
        except PushError as exc:
            reason = str(exc).replace("rows[0]", "row", 1)
            dead.append(DeadLetter(event, "invalid_row", reason))
        else:
            good.append(event)
    return good, check(good), dead


def prepare_batch(
    events: Sequence[Event],
    views: Callable[[str], ViewSpec | None] | Mapping[str, ViewSpec],
    *,
    now: datetime,
    policy: PushPolicy,
) -> PreparedBatch:
    """Group `events` per push source (`views` finds a source's view), validate, key; bad events dead."""
    find = views.get if isinstance(views, Mapping) else views
    dead: list[DeadLetter] = []
    by_source: dict[str, list[Event]] = {}
    for event in events:
        if event.error is not None or event.push_source is None or event.row is None:
            dead.append(DeadLetter(event, "bad_event", event.error or "not an event"))
            continue
        by_source.setdefault(event.push_source, []).append(event)
    groups: list[ViewBatch] = []
    for source, members in by_source.items():
        view = find(source)
        if view is None:
            for event in members:
                dead.append(DeadLetter(event, "unknown_source", f"push source {source!r} does not exist"))
            continue
        good, valid, faulty = _validate(view, members, now=now, policy=policy)
        dead += faulty
        if good:
            keys = [event_key(source, event.row or {}) for event in good]
            groups.append(ViewBatch(source, view, good, valid, keys))
    return PreparedBatch(groups=groups, dead=dead)
