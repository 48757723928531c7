"""Full-text search of a profile's touchpoints: the same text, matched and ranked the same way,
whichever store holds them.

A touchpoint is searched by what the customer sees of it in the timeline: its scenario, type,
traits and payload; identifiers stay out (they are no one's words, and the page shows them masked).
A term matches anywhere in that text, case aside, so ``CT球管`` finds ``更换CT球管`` and ``quote``
finds ``quote_issued``: Chinese is written without spaces, so a word boundary cannot be relied on.
Terms of three characters or more are looked up as trigrams (SQLite FTS5's ``trigram``
tokenizer) and ranked by bm25; shorter ones are required as substrings.

Each store reads only the searched profile's touchpoints (SQLite by its profile index, Neo4j by
the profile's HAS_TOUCHPOINT edges, both narrowed by the time range), and :func:`rank` indexes
those in a throwaway in-memory FTS5 table: the cost grows with that profile, not with every
profile, and no search text is kept anywhere (nothing for erasure to chase). Neo4j 5.26's
full-text index could not do this: ``db.index.fulltext.queryNodes`` searches every node of the
index and scores no given set of nodes, so a profile's search had to query all profiles'
touchpoints and filter afterwards.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any, Mapping, Sequence

import orjson

#: Terms the trigram index can look up; shorter ones are matched as substrings.
TRIGRAM = 3


def body(scenario: str, type_: str, event: Mapping[str, Any]) -> str:
    """The text a touchpoint is searched by: what the timeline shows of it."""
    parts = [scenario, type_, *(orjson.dumps(event[k]).decode() for k in ("traits", "payload") if event.get(k))]
    return " ".join(parts)


def fts5_match(terms: Sequence[str]) -> str | None:
    """An FTS5 MATCH expression requiring every indexable term; None if no term is long enough."""
    long = [t for t in terms if len(t) >= TRIGRAM]
    return " AND ".join('"' + t.replace('"', '""') + '"' for t in long) or None


def rank(bodies: Sequence[str], terms: Sequence[str], limit: int) -> list[int]:
    """Positions in ``bodies`` of those holding every term, best match first (ties, and a search
    of short terms only, in the order given), at most ``limit``."""
    short = [t.casefold() for t in terms if len(t) < TRIGRAM]
    candidates = [i for i, text in enumerate(bodies) if all(t in text.casefold() for t in short)]
    match = fts5_match(terms)
    if match is None:
        return candidates[:limit]
    with closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE VIRTUAL TABLE touchpoint_text USING fts5(body, tokenize = 'trigram')")
        db.executemany("INSERT INTO touchpoint_text (rowid, body) VALUES (?, ?)", [(i, bodies[i]) for i in candidates])
        rows = db.execute("SELECT rowid FROM touchpoint_text WHERE touchpoint_text MATCH ? "
                          "ORDER BY bm25(touchpoint_text), rowid LIMIT ?", (match, limit))
        return [i for (i,) in rows]
