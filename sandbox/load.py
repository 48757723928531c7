"""Own data into a sandbox: CSV or JSON-lines rows mapped to touchpoint events (identity/events.py).

A column goes to the event field ``--map`` names for it; otherwise a column named like an event
field (``event_id``, ``traits.name``, ``identifiers.email``...) goes there, and any other column
to ``payload`` under its own name, so nothing in a row is lost. A row that cannot be read is
reported with its line number and reason, and the rest go on.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

import orjson

from graph.factory import store_from_url
from identity.events import EventRejected, FieldError
from identity.rules import Rules
from sandbox.workspace import Sandbox, SandboxError
from service.blocking import start_with_blocking_index
from service.models import live_rules
from streams.batch import BatchReport, resolve_lines, write_reject

Format = Literal["csv", "jsonl"]
_TOP = ("schema_version", "event_id", "scenario", "type", "occurred_at", "identifiers", "traits", "consent",
        "payload", "causation")
_NESTED = ("identifiers.", "traits.", "payload.", "consent.")


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """``event_field=column`` pairs → column → event field."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        target, sep, column = pair.partition("=")
        if not sep or not target or not column:
            raise SandboxError(f"bad --map {pair!r}: expected event_field=column, e.g. traits.name=full_name")
        if target not in _TOP and not target.startswith(_NESTED):
            raise SandboxError(f"bad --map {pair!r}: {target!r} is no event field (one of {', '.join(_TOP)}, "
                               "or identifiers.X, traits.X, payload.X, consent.X)")
        mapping[column] = target
    return mapping


def read_rows(path: Path, fmt: Format) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row) for each row, or (line number, why it cannot be read)."""
    if fmt == "jsonl":
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    yield number, _json_row(raw)
        return
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = len(reader.fieldnames or ())
        for row in reader:
            if None in row:
                yield reader.line_num, f"{header + len(row[None])} cells where the header has {header}"
            elif None in row.values():
                yield reader.line_num, f"{sum(v is not None for v in row.values())} cells where the header has {header}"
            else:
                yield reader.line_num, {k: v for k, v in row.items() if v != ""}


def _json_row(raw: bytes) -> dict[str, Any] | str:
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    return row if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"


def to_event(row: Mapping[str, Any], mapping: Mapping[str, str], label_column: str | None,
             scenario: str) -> tuple[dict[str, Any], str | None]:
    """The event a row stands for, and its label (the label column's value) if any."""
    event: dict[str, Any] = {"scenario": scenario}
    label = None
    for column, value in row.items():
        if column == label_column:
            label = str(value)
            continue
        target = mapping.get(column) or (column if column in _TOP or column.startswith(_NESTED) else f"payload.{column}")
        head, _, rest = target.partition(".")
        if rest:
            event.setdefault(head, {})[rest] = value
        else:
            event[head] = value
    return event, label


async def load(sandbox: Sandbox, path: Path, rules: Rules, *, fmt: Format, mapping: Mapping[str, str],
               label_column: str | None = None, scenario: str = "sandbox.load", batch_size: int = 200,
               progress: Callable[[int], None] | None = None) -> BatchReport:
    """Resolve the file's rows into the sandbox's baseline under its live model (``rules`` while
    it has none); refused and
    unreadable rows go to the sandbox's rejects file with their line number and reason."""
    sandbox.manifest()
    lines: list[tuple[int, bytes]] = []
    labels: list[bytes] = []
    with sandbox.rejects.open("wb") as rejects:
        unreadable = 0
        for number, row in read_rows(path, fmt):
            if isinstance(row, str):
                unreadable += 1
                write_reject(rejects, number, b"", EventRejected("unreadable", [FieldError(path="", reason=row)]))
                continue
            event, label = to_event(row, mapping, label_column, scenario)
            lines.append((number, orjson.dumps(event, default=str)))
            if label is not None and isinstance(event.get("event_id"), str):
                labels.append(orjson.dumps({"event_id": event["event_id"], "label": label}) + b"\n")
        if progress is not None and unreadable:
            progress(unreadable)
        async with store_from_url(sandbox.store_url) as store:
            rules = await live_rules(store, rules)  # the live model its snapshot holds, if one is
            await start_with_blocking_index(store, rules)
            report = await resolve_lines(lines, store, rules, batch_size=batch_size, rejects=rejects, progress=progress)
    with sandbox.labels.open("ab") as out:
        out.writelines(labels)
    report.events += unreadable
    report.rejected += unreadable
    return report


def read_rejects(sandbox: Sandbox) -> list[tuple[int, str]]:
    """(line, reason) of each row the last load refused."""
    if not sandbox.rejects.is_file():
        return []
    found = []
    for raw in sandbox.rejects.read_bytes().splitlines():
        record = orjson.loads(raw)
        found.append((record["line"], "; ".join(str(FieldError(**e)) for e in record["errors"])))
    return sorted(found)


def read_labels(sandbox: Sandbox) -> dict[str, str]:
    if not sandbox.labels.is_file():
        return {}
    return {r["event_id"]: r["label"] for r in map(orjson.loads, sandbox.labels.read_bytes().splitlines())}
