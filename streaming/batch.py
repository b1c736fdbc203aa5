"""A micro-batch of events, sorted into what can be written and what goes to the dead letters.

Events are grouped per push source (one group per feature view), each group validated by the push's own
rules (`core.push.rows.validate_rows`: schema, types, the accepted event-time window). A bad event never
blocks the others: when a group fails, its rows are validated one by one and only the faulty ones leave.

The common case is fast: a group's rows are decoded from their JSON together, already typed
(`core.push.typed`). When that refuses anything, the group's events are read and validated the thorough
way (`streaming.events.reread`, `validate_rows`), which alone words the dead letters: the outcome is the
same either way, in the same order. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from core.features.specs import ViewSpec
from core.push.rows import PushError, ValidRows, validate_rows
from core.push.service import PushPolicy
from core.push.typed import typed_rows
from streaming.events import Event, event_digest, reread, row_digests

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
    """The valid events of one push source, in arrival order, with their rows in column form and keys
    (the 16 bytes of each event's `event_key`)."""

    push_source: str
    view: ViewSpec
    events: list[Event]
    valid: ValidRows
    keys: list[bytes]

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


def _fast(
    source: str, view: ViewSpec, events: list[Event], *, now: datetime, policy: PushPolicy
) -> ViewBatch | None:
    """The group when every row is decoded and valid at once; None: read it the thorough way."""
    jsons = [event.row_json for event in events if event.row_json is not None]
    if len(jsons) != len(events):  # an event read the thorough way already
        return None
    typed = typed_rows(
        view,
        jsons,
        now=now,
        max_age_s=policy.max_age_s,
        clock_skew_s=policy.clock_skew_s,
    )
    if typed is None:
        return None
    valid, sorted_rows = typed
    return ViewBatch(source, view, events, valid, row_digests(source, sorted_rows))


Placed = tuple[int, ViewBatch | None, list[DeadLetter]]
"""A source's group (if any rows are good) and its dead letters, after the position of its first event."""


def _thorough(
    source: str,
    view: ViewSpec | None,
    members: list[tuple[int, Event]],
    bad: list[tuple[int, DeadLetter]],
    *,
    now: datetime,
    policy: PushPolicy,
) -> Placed | None:
    """A source's events read and validated one by one; the unreadable ones join `bad`."""
    readable: list[tuple[int, Event]] = []
    for index, fast in members:
        event = reread(fast)
        if event.readable:
            readable.append((index, event))
        else:
            bad.append((index, DeadLetter(event, "bad_event", event.error or "not an event")))
    if not readable:
        return None
    first, events = readable[0][0], [event for _, event in readable]
    if view is None:
        reason = f"push source {source!r} does not exist"
        return first, None, [DeadLetter(event, "unknown_source", reason) for event in events]
    good, valid, faulty = _validate(view, events, now=now, policy=policy)
    if not good:
        return first, None, faulty
    keys = [event_digest(source, event.row or {}) for event in good]
    return first, ViewBatch(source, view, good, valid, keys), faulty


def prepare_batch(
    events: Sequence[Event],
    views: Callable[[str], ViewSpec | None] | Mapping[str, ViewSpec],
    *,
    now: datetime,
    policy: PushPolicy,
) -> PreparedBatch:
    """Group `events` per push source (`views` finds a source's view), validate, key; bad events dead.

    Dead letters come in this order: unreadable events, then per source (in the order of each source's
    first readable event) its unknown-source or invalid rows."""
    find = views.get if isinstance(views, Mapping) else views
    bad: list[tuple[int, DeadLetter]] = []
    by_source: dict[str, list[tuple[int, Event]]] = {}
    for index, event in enumerate(events):
        if not event.readable or event.push_source is None:
            bad.append((index, DeadLetter(event, "bad_event", event.error or "not an event")))
            continue
        by_source.setdefault(event.push_source, []).append((index, event))
    placed: list[Placed] = []
    for source, members in by_source.items():
        view = find(source)
        if view is not None:
            group = _fast(source, view, [event for _, event in members], now=now, policy=policy)
            if group is not None:
                placed.append((members[0][0], group, []))
                continue
        thorough = _thorough(source, view, members, bad, now=now, policy=policy)
        if thorough is not None:
            placed.append(thorough)
    placed.sort(key=lambda item: item[0])
    bad.sort(key=lambda item: item[0])
    dead = [letter for _, letter in bad] + [letter for _, _, faulty in placed for letter in faulty]
    return PreparedBatch(groups=[group for _, group, _ in placed if group is not None], dead=dead)
