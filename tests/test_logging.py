"""Structured logs: JSON lines off a terminal, console lines on one, and no personal data at info and above."""

from __future__ import annotations

import io
import json
from typing import Any

import orjson
import pytest
import structlog

from identity.events import EventRejected, parse_event
from identity.features import prepare
from streams.logging import REDACTED, configure_logging, log_batch, scrub
from streams.pipeline import Incoming, ResolutionPipeline
from tests.conftest import cn_national_id

EMAIL, PHONE, NAME = "zhang.wei@example.com", "13800138000", "张伟"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def output():
    """Logs of this test, configured afresh; structlog's defaults are restored afterwards."""
    stream = io.StringIO()
    configure_logging("debug", stream=stream, cache=False)
    yield stream
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_are_json_with_level_timestamp_and_fields_when_not_a_terminal(output):
    structlog.get_logger("t").info("worker ready", event_id="e1", profile_id="p_1")
    (line,) = lines(output)
    assert line["event"] == "worker ready" and line["level"] == "info"
    assert (line["event_id"], line["profile_id"]) == ("e1", "p_1")
    assert line["timestamp"].endswith("Z")


def test_lines_are_for_people_on_a_terminal():
    terminal = Terminal()
    configure_logging("info", stream=terminal, cache=False)
    try:
        structlog.get_logger("t").info("worker ready", store="sqlite")
    finally:
        structlog.reset_defaults()
    text = terminal.getvalue()
    assert "worker ready" in text and "store" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_lines_below_the_level_are_not_written():
    stream = io.StringIO()
    configure_logging("warning", stream=stream, cache=False)
    try:
        structlog.get_logger("t").info("decision", event_id="e1")
    finally:
        structlog.reset_defaults()
    assert stream.getvalue() == ""


def test_personal_fields_are_redacted_at_info_level(output):
    structlog.get_logger("t").info("profile changed", email=EMAIL, phone=PHONE, name=NAME, profile_id="p_1")
    (line,) = lines(output)
    assert (line["email"], line["phone"], line["name"]) == (REDACTED,) * 3
    assert line["profile_id"] == "p_1", "ids stay: they are how lines are correlated"


def test_personal_containers_keep_their_keys_and_lose_their_values(output):
    structlog.get_logger("t").warning("odd event", traits={"name": NAME, "city": "上海"},
                                      identifiers={"phone": [PHONE], "email": EMAIL}, consent_given=True)
    (line,) = lines(output)
    assert line["traits"] == {"name": REDACTED, "city": REDACTED}
    assert line["identifiers"] == {"phone": [REDACTED], "email": REDACTED}
    assert line["consent_given"] is True


def test_emails_and_phones_in_any_text_are_scrubbed(output):
    structlog.get_logger("t").warning(f"mail to {EMAIL} bounced", errors=f"tried {PHONE}, +44 7400 123456 and (010) 6552-9988",
                                      nested={"note": f"call {PHONE}"})
    text = output.getvalue()
    for value in (EMAIL, PHONE, "7400 123456", "6552-9988"):
        assert value not in text, value
    assert lines(output)[0]["nested"]["note"] == f"call {REDACTED}"


def test_identifier_keys_are_scrubbed_but_masked_ones_are_kept(output):
    national_id = cn_national_id(7)
    structlog.get_logger("t").error("store refused", keys=f"phone:+8613800138000, national_id:{national_id}",
                                    detail="phone:+8***00 is held by 4 profiles")
    text = output.getvalue()
    assert "+8613800138000" not in text and national_id not in text
    assert lines(output)[0]["detail"] == "phone:+8***00 is held by 4 profiles"


def test_exception_tracebacks_are_scrubbed(output):
    try:
        raise ValueError(f"no profile for {EMAIL}")
    except ValueError:
        structlog.get_logger("t").exception("event failed in resolution", event_id="e1")
    (line,) = lines(output)
    assert "ValueError" in line["exception"] and EMAIL not in line["exception"]


def test_debug_lines_are_written_as_given(output):
    structlog.get_logger("t").debug("matching detail", name=NAME)
    assert lines(output)[0]["name"] == NAME


@pytest.mark.parametrize("text", [
    "2026-03-01T09:12:00+08:00", "event is 1048576 bytes; the limit is 262144", "kafka://127.0.0.1:9092",
    "touchpoints[1]@123456789", "d_6116d84e71857c0b300e", "p_396e8fe9afbf5908f328 holds another national_id",
    "gave up after 3 attempts: HTTP 503", "identifiers.phone: not a valid number for region CN", "0.123456789",
])
def test_scrubbing_leaves_operational_text_alone(text):
    assert scrub(text) == text


@pytest.mark.parametrize("raw", [
    {"identifiers": {"email": "zhang.wei@@example.com"}}, {"identifiers": {"phone": "+86 1380013800"}},
    {"identifiers": {"national_id": "110101199003070019"}}, {"identifiers": {"email": ["zw@example.com", 13800138000]}},
    {"traits": {"name": {"first": "Zhang Wei"}}}, {"occurred_at": "2026-03-01 zw@example.com"},
    {"consent": {"marketing": "Zhang Wei"}}, {"scenario": "Zhang Wei"},
])
def test_refusal_reasons_name_fields_never_values(rules, raw):
    event = {"event_id": "e1", "scenario": "sales.crm", "type": "t", "occurred_at": "2026-03-01T09:00:00+08:00", **raw}
    with pytest.raises(EventRejected) as refused:
        prepare(parse_event(orjson.dumps(event)), rules)
    for value in ("zhang.wei", "1380013800", "110101199003070019", "zw@example.com", "Zhang Wei"):
        assert value not in str(refused.value), str(refused.value)


async def _acknowledged(*_args: Any, **_kw: Any) -> Any:
    import asyncio

    ack = asyncio.get_running_loop().create_future()
    ack.set_result(None)
    return ack


async def test_a_batch_logs_one_debug_line_per_decision_and_a_warning_per_protection(output, store, rules):
    pipeline = ResolutionPipeline(store, rules, _acknowledged, max_event_bytes=4096)
    events = [{"event_id": f"s{k}", "scenario": "sales.crm", "type": "t", "occurred_at": "2026-03-01T09:00:00+08:00",
               "identifiers": {"phone": PHONE, "national_id": cn_national_id(k)}, "traits": {"name": NAME}} for k in (1, 2)]
    result = await pipeline.handle([Incoming(orjson.dumps(e), "touchpoints", 0, i) for i, e in enumerate(events)])
    output.truncate(0), output.seek(0)
    log_batch(result)
    logged = lines(output)
    decisions = [line for line in logged if line["event"] == "decision"]
    warnings = [line for line in logged if line["level"] == "warning"]
    assert [(d["event_id"], d["level"]) for d in decisions] == [("s1", "debug"), ("s2", "debug")]
    assert all(d["profile_id"].startswith("p_") and d["action"] for d in decisions)
    assert [(w["event_id"], w["kind"]) for w in warnings] == [("s2", "conflicting_id")]
    assert PHONE not in output.getvalue() and NAME not in output.getvalue(), "decision lines carry ids, not data"


@pytest.mark.parametrize("raw", [{"traits": {"Zhang Wei": "x"}}, {"identifiers": {"zhang-wei-at-home": "x"}}])
def test_refusal_reasons_do_not_echo_a_value_sent_as_a_key(rules, raw):
    event = {"event_id": "e1", "scenario": "sales.crm", "type": "t", "occurred_at": "2026-03-01T09:00:00+08:00", **raw}
    with pytest.raises(EventRejected) as refused:
        prepare(parse_event(orjson.dumps(event)), rules)
    assert "Zhang Wei" not in scrub(str(refused.value)) and "zhang-wei" not in scrub(str(refused.value))
