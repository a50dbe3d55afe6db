"""When the next meeting takes place: the agreed rhythm, inside both parties' availability."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from events.commands import PartyAvailability

# How far ahead to look for a slot both parties are available in before falling back to
# the due time itself (the reminder then asks them to agree a time).
SEARCH_DAYS = 28
SLOT_GRANULARITY = timedelta(minutes=15)

Interval = tuple[datetime, datetime]


def next_slot(not_before: datetime, availability: tuple[PartyAvailability, ...], minutes: int) -> datetime:
    """The first start at or after `not_before` at which every party that gave availability
    is free for `minutes`, looking `SEARCH_DAYS` ahead; `not_before` if there is none."""
    slot = first_common_slot(not_before, availability, minutes)
    return not_before if slot is None else slot


def first_common_slot(not_before: datetime, availability: tuple[PartyAvailability, ...], minutes: int) -> datetime | None:
    """Like `next_slot`, but None when the parties gave availability and share no slot in
    the `SEARCH_DAYS` searched (without availability every moment is a slot)."""
    if not availability:
        return not_before
    length = timedelta(minutes=minutes)
    horizon = not_before + timedelta(days=SEARCH_DAYS)
    common = _windows_utc(availability[0], not_before, horizon)
    for other in availability[1:]:
        common = _intersect(common, _windows_utc(other, not_before, horizon))
    for start, end in common:
        candidate = _round_up(max(start, not_before))
        if candidate + length <= end:
            return candidate
    return None


def _windows_utc(availability: PartyAvailability, since: datetime, until: datetime) -> list[Interval]:
    zone = ZoneInfo(availability.timezone)
    first = since.astimezone(zone).date() - timedelta(days=1)
    last = until.astimezone(zone).date() + timedelta(days=1)
    intervals: list[Interval] = []
    day: date = first
    while day <= last:
        for window in availability.windows:
            if window.weekday == day.weekday():
                start = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
                end = datetime.combine(day, window.end, tzinfo=zone).astimezone(UTC)
                if end > since and start < until:
                    intervals.append((start, end))
        day += timedelta(days=1)
    return _merge(sorted(intervals))


def _merge(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in intervals:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _intersect(left: list[Interval], right: list[Interval]) -> list[Interval]:
    result: list[Interval] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start, end = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if start < end:
            result.append((start, end))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return result


def _round_up(moment: datetime) -> datetime:
    step = SLOT_GRANULARITY.total_seconds()
    seconds = moment.timestamp()
    rounded = -(-seconds // step) * step
    return moment + timedelta(seconds=rounded - seconds)
