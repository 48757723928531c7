"""Searching a customer's own history: "battery quote last year" or "去年 更换CT球管".

Words are looked up in the profile's touchpoints as graph/fulltext.py reads them (anywhere in a
word, case aside, Chinese without spaces), every word must match, and the best matches come first. Time
phrases in English or Chinese ("last year", "上个月", "2025", "2025年", "recently") narrow the
range instead of being looked up; a query of time phrases alone lists that range in time order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from graph.store import GraphStore, TimelineEntry

_STOP = frozenset("a an and about at for from in my of on the to with me i".split())
#: Chinese particles left at the edge of a run once a time phrase is taken out ("上个月的电池").
_PARTICLES = "的了和在我是"
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_YEAR = re.compile(r"^((?:19|20)\d\d)年?$")
_CJK_YEAR = re.compile(r"((?:19|20)\d\d)年")
#: Results past this many are not worth reading on one page; the index ranks them first.
LIMIT = 200


@dataclass(frozen=True, slots=True)
class Query:
    terms: tuple[str, ...]
    start: datetime | None = None
    end: datetime | None = None

    def within(self, occurred_at: str) -> bool:
        if self.start is None or self.end is None:
            return True
        return self.start <= datetime.fromisoformat(occurred_at) < self.end


def _month_start(day: datetime) -> datetime:
    return day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _ranges(now: datetime) -> dict[tuple[str, ...], tuple[datetime, datetime]]:
    """Time phrases, English and Chinese, and the range each names."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    year = today.replace(month=1, day=1)
    month = _month_start(today)
    week = today - timedelta(days=today.weekday())
    recent = (now - timedelta(days=30), now + timedelta(days=1))
    return {
        ("last year", "去年"): (year.replace(year=year.year - 1), year),
        ("this year", "今年"): (year, year.replace(year=year.year + 1)),
        ("last month", "上个月", "上月"): (_month_start(month - timedelta(days=1)), month),
        ("this month", "这个月", "本月"): (month, _month_start(month + timedelta(days=32))),
        ("last week", "上周", "上星期"): (week - timedelta(days=7), week),
        ("this week", "这周", "本周", "这星期"): (week, week + timedelta(days=7)),
        ("yesterday", "昨天"): (today - timedelta(days=1), today),
        ("today", "今天"): (today, today + timedelta(days=1)),
        ("recently", "recent", "最近", "近期"): recent,
    }


def _phrase(phrase: str) -> str:
    # Chinese has no spaces to bound a word: its phrases match anywhere.
    return re.escape(phrase) if not phrase.isascii() else rf"\b{re.escape(phrase)}\b"


def parse_query(text: str, now: datetime | None = None) -> Query:
    now = now or datetime.now(timezone.utc)
    lowered = " ".join(_WORD.findall(text.lower()))
    start = end = None
    for phrases, (a, b) in _ranges(now).items():
        pattern = "|".join(_phrase(p) for p in phrases)
        if re.search(pattern, lowered):
            lowered = re.sub(pattern, " ", lowered)
            start, end = a, b
            break
    lowered = _CJK_YEAR.sub(r" \1 ", lowered)
    terms = []
    for word in lowered.split():
        year = _YEAR.match(word)
        if year:
            start = datetime(int(year[1]), 1, 1, tzinfo=timezone.utc)
            end = datetime(int(year[1]) + 1, 1, 1, tzinfo=timezone.utc)
        elif word.isascii():
            if word not in _STOP:
                terms.append(word[:-1] if len(word) > 3 and word.endswith("s") else word)
        elif word.strip(_PARTICLES):
            terms.append(word.strip(_PARTICLES))
    return Query(tuple(terms), start, end)


async def search(store: GraphStore, profile_id: str, query: Query) -> list[TimelineEntry]:
    """The profile's touchpoints matching ``query``: ranked by the index, or in time order when
    only a time range was asked for."""
    if query.terms:
        # The store filters by time before it limits: older matches must not crowd out the range.
        return await store.search_timeline(profile_id, query.terms, LIMIT, start=query.start, end=query.end)
    return [entry for entry in await store.timeline(profile_id) if query.within(entry.occurred_at)]
