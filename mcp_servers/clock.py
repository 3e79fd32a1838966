"""Date and time for the tools server: the current time in a time zone, and days between dates."""

from datetime import UTC, date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mcp_servers.errors import ToolArgumentError


def _zone(name: str) -> timezone | ZoneInfo:
    key = name.strip()
    if key.upper() in ("UTC", "Z", ""):
        return UTC
    if len(key) > 64 or ".." in key or key.startswith("/"):
        raise ToolArgumentError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolArgumentError(
            f"unknown time zone {name!r}; use an IANA name such as 'Asia/Seoul' or 'UTC'"
        ) from None


def now(zone: str = "UTC") -> dict[str, Any]:
    current = datetime.now(_zone(zone))
    return {
        "iso": current.isoformat(timespec="seconds"),
        "date": current.date().isoformat(),
        "time": current.strftime("%H:%M:%S"),
        "weekday": current.strftime("%A"),
        "timezone": zone.strip() or "UTC",
        "unix": int(current.timestamp()),
    }


def _date(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ToolArgumentError(f"{what} must be a date like 2026-11-25, got {text!r}") from None


def days_between(start: str, end: str) -> dict[str, Any]:
    first, last = _date(start, "start"), _date(end, "end")
    return {
        "start": first.isoformat(),
        "end": last.isoformat(),
        "days": (last - first).days,
        "weekday_start": first.strftime("%A"),
        "weekday_end": last.strftime("%A"),
    }
