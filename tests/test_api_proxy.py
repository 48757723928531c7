"""`idgraph api` behind a TLS-terminating proxy: the session cookie is Secure when the proxy says
the visitor came over HTTPS, and only a proxy it was told to trust (IDGRAPH_API_FORWARDED_ALLOW_IPS)
is believed."""

from __future__ import annotations

import json

from api.auth import issue
from tests.api_support import PROXIED_HTTPS, idgraph_api, session_cookie_set_by_signing_in


def admin() -> tuple[str, str]:
    token, entry = issue(["admin"], "ops")
    return token, json.dumps([entry.model_dump(exclude_none=True)])


def test_a_trusted_proxys_https_makes_the_session_cookie_secure(tmp_path):
    token, entry = admin()
    with idgraph_api(tmp_path, entry, IDGRAPH_API_FORWARDED_ALLOW_IPS="127.0.0.1") as base:
        assert "; secure" in session_cookie_set_by_signing_in(base, token).lower()


def test_the_forwarded_scheme_is_not_believed_unless_a_proxy_is_trusted(tmp_path):
    token, entry = admin()
    with idgraph_api(tmp_path, entry) as base:
        assert "; secure" not in session_cookie_set_by_signing_in(base, token).lower()
