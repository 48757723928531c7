"""The API keeps to its own OpenAPI spec: schemathesis generates requests from the spec (with an
admin token) and checks that none gets a 5xx and every response conforms to what is declared."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path


import schemathesis
from schemathesis import checks
from hypothesis import HealthCheck, settings

from api import create_app
from graph.sqlite import SQLiteStore
from tests.api_support import RULES, registry
from tests.conftest import Engine, make_event


def _app(path):
    async def seed():
        store = SQLiteStore(path)
        await store.open()
        engine = Engine(store, RULES)
        await engine.resolve(make_event({"email": "a@example.com"}, {"name": "Ann Lee", "city": "Shanghai"}))
        await engine.resolve(make_event(traits={"name": "Ann Lee", "city": "Shanghai"}))
        return store

    store = asyncio.run(seed())
    tokens, plain = registry({"admin": {"scopes": ["admin"]}})
    return create_app(store=store, tokens=tokens, rules=RULES), {"Authorization": f"Bearer {plain['admin']}"}


#: What the issue asks (no 5xx; status, content type, headers and body as declared), plus auth
#: that cannot be skipped. Not negative-data rejection: FastAPI accepts unknown query parameters.
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance, checks.ignored_auth]
APP, AUTH = _app(Path(tempfile.mkdtemp(prefix="idgraph-schema-")) / "graph.db")
schema = schemathesis.openapi.from_asgi("/v1/openapi.json", APP, headers=AUTH)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_no_5xx_and_conform_to_the_spec(case):
    case.call_and_validate(headers=AUTH, checks=CHECKS)
