"""Full-text search of a profile's touchpoints: the words a query asks for, as each store's index
reads them.

A term matches where it occurs in the touchpoint's scenario, type, traits or payload, case
aside and anywhere in a word, so ``CT球管`` finds ``更换CT球管`` and ``quote`` finds
``quote_issued``: Chinese is written without spaces, so a word boundary cannot be relied on.
SQLite indexes trigrams (FTS5's ``trigram`` tokenizer) of the searched profile's touchpoints, per
search, in memory of the searching connection, so neither the worker's commit nor the file's write
lock is involved; a term shorter than three characters is checked with LIKE over the same text. Neo4j's
full-text index (Lucene's CJK analyzer) indexes Chinese as character bigrams and other words
whole: a Chinese term is looked up as its bigram phrase, any other term as a word prefix. That
index is eventually consistent (kept off the write's commit), and a search first waits for it to
catch up.
"""

from __future__ import annotations

import re
from typing import Sequence

#: Terms the trigram index can look up; shorter ones are matched with LIKE.
TRIGRAM = 3
#: What SQLite's index reads of a touchpoint ``t``: identifiers stay out (they are no one's words).
SQLITE_BODY = ("t.scenario || ' ' || t.type || ' ' || coalesce(json_extract(t.event, '$.traits'), '') "
               "|| ' ' || coalesce(json_extract(t.event, '$.payload'), '')")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")
_LUCENE_SPECIAL = re.compile(r'([+\-!(){}\[\]^"~*?:\\/&|])')


def fts5_match(terms: Sequence[str]) -> str | None:
    """An FTS5 MATCH expression requiring every indexable term; None if no term is long enough."""
    long = [t for t in terms if len(t) >= TRIGRAM]
    return " AND ".join('"' + t.replace('"', '""') + '"' for t in long) or None


def like_patterns(terms: Sequence[str]) -> list[str]:
    """LIKE patterns (escaped with backslash) for the terms too short for the trigram index."""
    return ["%" + re.sub(r"([\\%_])", r"\\\1", t) + "%" for t in terms if len(t) < TRIGRAM]


def lucene_query(terms: Sequence[str]) -> str:
    """A Lucene query requiring every term: Chinese runs as bigram phrases, other words as prefixes."""
    clauses = []
    for term in terms:
        for piece in re.split(f"({_CJK.pattern})", term):
            if not piece:
                continue
            if _CJK.fullmatch(piece):
                clauses.append(f'"{piece}"')
            else:
                clauses.extend(_LUCENE_SPECIAL.sub(r"\\\1", word) + "*" for word in re.findall(r"[^\W_]+", piece))
    return " AND ".join(clauses)
