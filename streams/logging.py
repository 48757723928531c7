"""Structured logs: JSON lines for machines, readable lines on a terminal, and no personal data.

Every line is one event with fields (``event_id``, ``profile_id`` for correlation with the
decision record and the deltas). Decisions are logged one per line at debug level; anomalies
(refused events, merge protections, dead-lettered deliveries) at warning.

Personal data never reaches a log line at info level or above: :func:`redact_personal_data`
runs on every such line, replacing values under personal keys (``email``, ``phone``,
``name``, ``traits``, ``identifiers``, ...) and scrubbing anything that looks like an email
address, a phone number or an identifier key (``phone:+86...``) from every other string,
tracebacks included. Debug level, which operators switch on to troubleshoot matching, is
left as written; the decision lines it carries hold ids and actions only.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, MutableMapping, TextIO

import orjson
import structlog

from streams.results import BatchResult

REDACTED = "[redacted]"

#: Keys whose values are personal data, or containers of it (a touchpoint's or a profile's parts).
PERSONAL_KEYS = frozenset({
    "email", "phone", "mobile", "name", "given_name", "family_name", "full_name", "first_name", "last_name",
    "nickname", "address", "street", "street_number", "postcode", "birth_date", "national_id",
    "wechat_openid", "device_id", "crm_id", "identifier", "identifiers", "traits", "profile", "changes",
    "payload", "touchpoint", "original", "raw", "body",
})
_IDENTIFIER_TYPES = "email|phone|wechat_openid|device_id|crm_id|national_id"
_PATTERNS = (
    # An identifier key as the store spells it; already-masked keys (``phone:+8***00``) are kept.
    (re.compile(rf"\b(?P<type>{_IDENTIFIER_TYPES}):(?!\S*\*\*\*)[^\s,;'\"\]\)}}]+"), r"\g<type>:" + REDACTED),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), REDACTED),
    # International form (+country code), a mainland mobile, or grouped digits (010 6552-9988):
    # not bare digit runs, which are mostly sizes and offsets.
    (re.compile(r"\+\d[\d\s().-]{5,}\d"), REDACTED),
    (re.compile(r"(?<![\w.])1[3-9]\d{9}(?![\w.])"), REDACTED),
    (re.compile(r"(?<![\w.])\(?\d{2,4}\)?[ -]\d{3,4}[ -]\d{3,4}(?![\w.])"), REDACTED),
    # National ids and card numbers: 15 digits and more.
    (re.compile(r"(?<![\w.])\d{14,18}[\dXx](?![\w.])"), REDACTED),
)
#: structlog's own keys, never personal data themselves (the message is scrubbed, not dropped).
_STRUCTURAL_KEYS = frozenset({"level", "timestamp", "logger", "log_level"})


def scrub(text: str) -> str:
    """``text`` with emails, phone numbers and identifier values replaced."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_all(value: Any) -> Any:
    """Everything under a personal key: keep the shape (which fields), drop the values."""
    if isinstance(value, dict):
        return {key: _redact_all(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_redact_all(item) for item in value]
    if value is None or isinstance(value, bool):
        return value
    return REDACTED


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _redact_all(item) if key in PERSONAL_KEYS else _redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_redact(item) for item in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return scrub(repr(value))  # an object's repr may carry anything it holds


def redact_personal_data(_logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no personal data in any line at info level or above."""
    if method_name == "debug":
        return event_dict
    for key, value in list(event_dict.items()):
        if key in _STRUCTURAL_KEYS:
            continue
        event_dict[key] = _redact_all(value) if key in PERSONAL_KEYS else _redact(value)
    return event_dict


def _json(event_dict: Any, **_kw: Any) -> str:
    return orjson.dumps(event_dict, default=str).decode()


def configure_logging(level: str | int = "info", *, stream: TextIO | None = None, json: bool | None = None,
                      cache: bool = True) -> None:
    """Configure structlog for the process: JSON lines unless ``stream`` is a terminal.

    ``cache`` keeps each logger's configuration after its first use (the fast path); tests
    that reconfigure turn it off.
    """
    stream = stream or sys.stdout
    if json is None:
        json = not stream.isatty()
    numeric = level if isinstance(level, int) else logging.getLevelName(level.upper())
    renderer: Any = structlog.processors.JSONRenderer(serializer=_json) if json \
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            # After the traceback is a string, so the traceback is scrubbed too.
            redact_personal_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=cache,
    )
    # httpx logs every request URL at INFO; webhook URLs can carry tokens.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))


_decisions = structlog.get_logger("idgraph.decisions")


def log_batch(result: BatchResult, log: Any = _decisions) -> None:
    """One debug line per decision and one warning per merge protection of a handled batch.

    Refused events are logged where they are refused (streams/pipeline.py); protections are
    logged here because a spike of them (a generic value) means a source sends bad data.
    """
    # At info, as the worker runs, the decision lines would be dropped: don't build them.
    verbose = log.is_enabled_for(logging.DEBUG)
    for outcome in result.outcomes:
        decision = outcome.decision
        if outcome.duplicate:
            if verbose:
                log.debug("duplicate event", event_id=outcome.event_id, profile_id=decision.get("profile_id"))
            continue
        protections = decision.get("protections", ())
        if verbose:
            log.debug("decision", event_id=outcome.event_id, profile_id=decision.get("profile_id"),
                      action=decision.get("action"), confidence=decision.get("confidence"),
                      merged_from=decision.get("merged_from"), rule_version=decision.get("rule_version"),
                      protections=[p.get("kind") for p in protections], deltas=len(outcome.deltas))
        for protection in protections:
            # ``detail`` names identifiers masked (identity.model.mask_identifier) and profile ids only.
            log.warning("merge protection triggered", event_id=outcome.event_id,
                        profile_id=decision.get("profile_id"), action=decision.get("action"),
                        kind=protection.get("kind"), identifier_type=protection.get("identifier_type"),
                        detail=protection.get("detail"))


__all__ = ["configure_logging", "redact_personal_data", "scrub", "log_batch", "PERSONAL_KEYS", "REDACTED"]
