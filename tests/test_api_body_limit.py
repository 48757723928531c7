"""Request bodies are limited while they stream in: a body over the limit answers a 413 problem
naming the limit, whether its Content-Length declares it (refused before the body is sent) or it
arrives chunked without one (refused once the bytes received pass the limit), and changes nothing.
The API runs behind a real uvicorn server: only a real server delivers a body as it arrives."""

from __future__ import annotations

import socket

import orjson
import pytest
from fastapi.testclient import TestClient

from api.limits import (
    DEFAULT_MAX_BODY_BYTES, ENV_MAX_BODY_BYTES, BodyLimit, LimitConfigError, max_body_bytes_from_env,
)
from tests.api_support import resolve, serve_api
from tests.conftest import make_event

LIMIT = 4096
#: A request the server is still waiting on after this long was not refused as it arrived.
PATIENCE_S = 5


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    path = tmp_path_factory.mktemp("limit") / "graph.db"
    (customer,) = resolve(path, make_event({"email": "wei@example.com"}, {"name": "Zhang Wei", "city": "上海"}))
    for running in serve_api(path, {"me": {"scopes": ["customer"], "profile_id": customer.profile_id}},
                             max_body_bytes=LIMIT):
        running.me = customer.profile_id
        yield running


def raw_patch(api, headers: dict[str, str], body_parts: list[bytes]) -> bytes:
    """Send a PATCH's head and these parts of its body, without finishing the body, and return
    what the server answers: a server that waits for the whole body answers nothing."""
    host, port = api.client.base_url.host, api.client.base_url.port
    head = {"Host": host, "Content-Type": "application/json", **api.as_("me"), **headers}
    with socket.create_connection((host, port), timeout=PATIENCE_S) as conn:
        conn.sendall(f"PATCH /v1/profiles/{api.me} HTTP/1.1\r\n".encode()
                     + b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n")
        try:
            for part in body_parts:
                conn.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a server that refuses mid-body may answer and close before the rest is sent
        answer = b""
        try:
            while not answer.endswith(b"}") and (chunk := conn.recv(65536)):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def problem(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), answer[:300]
    return int(head.split()[1]), orjson.loads(body)


def name_of(api) -> tuple[str, int]:
    profile = api.get("me", f"/v1/profiles/{api.me}").json()
    return profile["traits"]["name"]["value"], profile["version"]


def test_patch_over_the_limit_answers_413_naming_the_limit_and_changes_nothing(api):
    before = name_of(api)
    response = api.patch("me", f"/v1/profiles/{api.me}", json={"traits": {"name": "x" * (2 * LIMIT)}})
    assert response.status_code == 413 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413 and f"{LIMIT} bytes" in response.json()["detail"]
    assert name_of(api) == before


def test_declared_content_length_over_the_limit_is_refused_before_the_body_is_sent(api):
    before = name_of(api)
    status, body = problem(raw_patch(api, {"Content-Length": str(100 * 1024 * 1024)}, []))
    assert status == 413 and f"{LIMIT} bytes" in body["detail"]
    assert name_of(api) == before


def test_chunked_body_without_a_length_is_refused_once_it_passes_the_limit(api):
    before = name_of(api)
    chunk = b"x" * 1024
    parts = [b'{"traits": {"name": "'] + [chunk] * (LIMIT // len(chunk) + 2)
    status, body = problem(raw_patch(api, {"Transfer-Encoding": "chunked"},
                                     [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts]))
    assert status == 413 and f"{LIMIT} bytes" in body["detail"]
    assert name_of(api) == before


def test_a_normal_write_right_after_refused_ones_succeeds(api):
    raw_patch(api, {"Content-Length": str(100 * 1024 * 1024)}, [])
    api.patch("me", f"/v1/profiles/{api.me}", json={"traits": {"name": "x" * (2 * LIMIT)}})
    fixed = api.patch("me", f"/v1/profiles/{api.me}", json={"traits": {"name": "Zhang Weiming"}})
    assert fixed.status_code == 200 and name_of(api)[0] == "Zhang Weiming"


def test_the_limit_is_one_mib_unless_the_setting_says_otherwise():
    assert max_body_bytes_from_env({}) == DEFAULT_MAX_BODY_BYTES == 1024 * 1024
    assert max_body_bytes_from_env({ENV_MAX_BODY_BYTES: "65536"}) == 65536


@pytest.mark.parametrize("bad", ["lots", "-1", "12", str(1024 ** 3)])
def test_an_unusable_limit_setting_is_refused_naming_the_variable(bad):
    with pytest.raises(LimitConfigError, match=ENV_MAX_BODY_BYTES):
        max_body_bytes_from_env({ENV_MAX_BODY_BYTES: bad})


def test_a_body_read_outside_the_apps_handlers_is_still_answered_413():
    # The middleware answers by itself when nothing inside turns the refusal into a response
    # (here a bare ASGI app that reads the body, where FastAPI's handlers would otherwise do it).
    async def reads_everything(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = TestClient(BodyLimit(reads_everything, max_bytes=LIMIT))  # not entered: the bare app has no lifespan
    refused = client.post("/anything", content=(b"x" * 1024 for _ in range(LIMIT // 1024 + 1)))
    taken = client.post("/anything", content=b"x" * LIMIT)
    assert refused.status_code == 413 and f"{LIMIT} bytes" in refused.json()["detail"]
    assert taken.status_code == 204
