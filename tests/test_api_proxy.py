"""`idgraph api` behind a TLS-terminating proxy: the session cookie is Secure when the proxy says
the visitor came over HTTPS, and only a proxy it was told to trust (IDGRAPH_API_FORWARDED_ALLOW_IPS)
is believed."""

from __future__ import annotations

import json
import re

import httpx

from api.auth import issue
from tests.api_support import PROXIED_HTTPS, idgraph_api, session_cookie_set_by_signing_in


def admin() -> tuple[str, str]:
    token, entry = issue(["admin"], "ops")
    return token, json.dumps([entry.model_dump(exclude_none=True)])


def test_a_trusted_proxys_https_makes_the_session_cookie_secure_and_host_only(tmp_path):
    token, entry = admin()
    with idgraph_api(tmp_path, entry, IDGRAPH_API_FORWARDED_ALLOW_IPS="127.0.0.1") as base:
        session = session_cookie_set_by_signing_in(base, token)
    # __Host-: browsers take it only Secure, for the whole site, from this host itself.
    assert session.startswith("__Host-idgraph_session=") and "; secure" in session.lower()
    assert "; path=/;" in session.lower() + ";" and "domain=" not in session.lower()


def test_a_session_cookie_over_https_signs_the_visitor_in_and_out(tmp_path):
    token, entry = admin()
    with idgraph_api(tmp_path, entry, IDGRAPH_API_FORWARDED_ALLOW_IPS="127.0.0.1") as base:
        session = session_cookie_set_by_signing_in(base, token).split(";")[0]
        console = httpx.get(f"{base}/console", headers={**PROXIED_HTTPS, "Cookie": session})
        csrf = re.search(r'name="csrf" value="([^"]+)"', console.text)
        assert console.status_code == 200 and csrf is not None, console.text
        out = httpx.post(f"{base}/signout", data={"csrf": csrf[1]}, headers={**PROXIED_HTTPS, "Cookie": session})
    (removed,) = out.headers.get_list("set-cookie")
    assert out.status_code == 303 and removed.startswith("__Host-idgraph_session=") and "; secure" in removed.lower()


def test_the_forwarded_scheme_is_not_believed_unless_a_proxy_is_trusted(tmp_path):
    token, entry = admin()
    with idgraph_api(tmp_path, entry) as base:
        session = session_cookie_set_by_signing_in(base, token)
    assert session.startswith("idgraph_session=") and "; secure" not in session.lower()
