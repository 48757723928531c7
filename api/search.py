"""Searching a customer's own history: "battery quote last year" finds last year's battery quotes.

Words match the touchpoint's scenario, type, traits and payload (keys and values), by prefix so
"quote" finds "quoted" and "quotes"; every word must match. Time phrases ("last year", "this
month", "yesterday", "2025", "recently") narrow the range instead of matching text. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

_STOP = frozenset("a an and about at for from in my of on the to with me i".split())
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_YEAR = re.compile(r"^(19|20)\d\d$")


@dataclass(frozen=True, slots=True)
class Query:
    terms: tuple[str, ...]
    start: datetime | None = None
    end: datetime | None = None


def _month_start(day: datetime) -> datetime:
    return day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _ranges(now: datetime) -> dict[str, tuple[datetime, datetime]]:
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    year = today.replace(month=1, day=1)
    month = _month_start(today)
    week = today - timedelta(days=today.weekday())
    return {
        "last year": (year.replace(year=year.year - 1), year),
        "this year": (year, year.replace(year=year.year + 1)),
        "last month": (_month_start(month - timedelta(days=1)), month),
        "this month": (month, _month_start(month + timedelta(days=32))),
        "last week": (week - timedelta(days=7), week),
        "this week": (week, week + timedelta(days=7)),
        "yesterday": (today - timedelta(days=1), today),
        "today": (today, today + timedelta(days=1)),
        "recently": (now - timedelta(days=30), now + timedelta(days=1)),
        "recent": (now - timedelta(days=30), now + timedelta(days=1)),
    }


def parse_query(text: str, now: datetime | None = None) -> Query:
    now = now or datetime.now(timezone.utc)
    lowered = " ".join(_WORD.findall(text.lower()))
    start = end = None
    for phrase, (a, b) in _ranges(now).items():
        if re.search(rf"\b{phrase}\b", lowered):
            lowered = re.sub(rf"\b{phrase}\b", " ", lowered)
            start, end = a, b
            break
    terms = []
    for word in lowered.split():
        if _YEAR.match(word):
            start, end = datetime(int(word), 1, 1, tzinfo=timezone.utc), datetime(int(word) + 1, 1, 1, tzinfo=timezone.utc)
        elif word not in _STOP:
            terms.append(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return Query(tuple(terms), start, end)


def _flatten(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _flatten(v)
    elif isinstance(value, list):
        for v in value:
            yield from _flatten(v)
    elif value is not None:
        yield str(value)


def _words(event: dict[str, Any]) -> set[str]:
    parts = [event.get("scenario", ""), event.get("type", ""), *_flatten(event.get("traits", {})),
             *_flatten(event.get("payload", {}))]
    return {w for part in parts for w in _WORD.findall(str(part).lower())}


def matches(query: Query, event: dict[str, Any], occurred_at: str) -> bool:
    when = datetime.fromisoformat(occurred_at)
    if query.start is not None and query.end is not None and not (query.start <= when < query.end):
        return False
    words = _words(event)
    return all(any(w.startswith(term) for w in words) for term in query.terms)
