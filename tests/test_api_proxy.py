"""`idgraph api` behind a TLS-terminating proxy: the session cookie is Secure when the proxy says
the visitor came over HTTPS, and only a proxy it was told to trust (IDGRAPH_API_FORWARDED_ALLOW_IPS)
is believed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from api.auth import issue
from devstack.broker import free_port, terminate

PROXIED_HTTPS = {"X-Forwarded-Proto": "https"}


@contextmanager
def idgraph_api(tmp_path: Path, token_entry: str, **env: str) -> Iterator[str]:
    """`idgraph api` as a child process on a port of its own; yields its base address."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", str(port)],
                            env={**os.environ, "IDGRAPH_STORE": f"sqlite:///{tmp_path / 'g.db'}",
                                 "IDGRAPH_API_TOKENS": token_entry, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/signin")
                break
            except httpx.ConnectError:
                assert proc.poll() is None and time.monotonic() < deadline, f"idgraph api did not start ({proc.poll()})"
                time.sleep(0.1)
        yield base
    finally:
        terminate(proc, 10)


def session_cookie_set_by_signing_in(base: str, token: str) -> str:
    """The Set-Cookie of the session, signing in through the proxy's headers as a browser would."""
    form = httpx.get(f"{base}/signin", headers=PROXIED_HTTPS)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None, form.text
    nonce = form.cookies["idgraph_signin"]
    signed_in = httpx.post(f"{base}/signin", data={"token": token, "csrf": csrf[1]},
                           headers={**PROXIED_HTTPS, "Cookie": f"idgraph_signin={nonce}"})
    assert signed_in.status_code == 303, signed_in.text
    (session,) = [c for c in signed_in.headers.get_list("set-cookie") if c.startswith("idgraph_session=")]
    return session


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
