"""Send windows (DESIGN.md section 4). Pure."""

import datetime as dt
from zoneinfo import ZoneInfo

# Whatever a practice sets, nothing goes out between these hours (practice time).
NEVER_BEFORE = dt.time(8, 0)
NEVER_AFTER = dt.time(20, 0)


class BadWindow(ValueError):
    pass


def check_window(days: str, start: dt.time, end: dt.time) -> None:
    if not days or any(d not in "1234567" for d in days):
        raise BadWindow(f"send days {days!r}: use ISO weekday digits, e.g. 12345 for Mon-Fri")
    if start < NEVER_BEFORE or end > NEVER_AFTER:
        raise BadWindow(f"send window {start:%H:%M}-{end:%H:%M} reaches into the quiet hours "
                        f"{NEVER_AFTER:%H:%M}-{NEVER_BEFORE:%H:%M}")
    if start >= end:
        raise BadWindow(f"send window {start:%H:%M}-{end:%H:%M} is empty")


def next_send_time(now: dt.datetime, *, tz: ZoneInfo, days: str, start: dt.time,
                   end: dt.time) -> dt.datetime:
    """`now` if it falls in the window, otherwise the window's next opening (aware, UTC)."""
    start, end = max(start, NEVER_BEFORE), min(end, NEVER_AFTER)
    local = now.astimezone(tz)
    for offset in range(8):
        day = local.date() + dt.timedelta(days=offset)
        if str(day.isoweekday()) not in days:
            continue
        opens = dt.datetime.combine(day, start, tzinfo=tz)
        closes = dt.datetime.combine(day, end, tzinfo=tz)
        if local < opens:
            return opens.astimezone(dt.UTC)
        if local < closes:
            return now.astimezone(dt.UTC)
    raise BadWindow(f"send days {days!r} open no window")


def in_window(now: dt.datetime, **window) -> bool:
    return next_send_time(now, **window) == now.astimezone(dt.UTC)
