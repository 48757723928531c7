"""What every page shares: the signed-in visitor (a token in an HttpOnly cookie), rendering in the
visitor's language, and errors shown as pages.

The session cookie holds the token itself, so each request authenticates exactly as the JSON API
does (a token removed from the configuration stops working at once). It is HttpOnly (no script
reads it), SameSite=Strict (no other site's form sends it), and over HTTPS Secure and named
``__Host-…`` (``__Secure-…`` for the sign-in cookie's narrower path); forms also carry
a CSRF value derived from the token. The sign-in form has no session yet to derive one from: a
random value in a cookie of its own (SameSite=Strict, for /signin only) stands in for the token, so
another site cannot sign a visitor in under its own token. A token travels only in a POST body and
that cookie: never in an address, so never in an access log.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path
from typing import Any, Callable, Coroutine
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from graph.store import StoreConflict, StoreUnavailable
from api.access import api_state
from api.auth import Principal, hash_token
from api.pages.i18n import language, translator
from api.problems import ProblemError

COOKIE = "idgraph_session"
#: Holds the sign-in form's stand-in for a session token (see the module's docstring).
SIGNIN_COOKIE = "idgraph_signin"
SIGNIN_PATH = "/signin"
_log = logging.getLogger(__name__)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


class SignInRequired(Exception):
    """The visitor has no valid session: the page answers with the sign-in form."""


class FormError(Exception):
    """A form the visitor filled in wrongly: shown on the page, keyed for translation."""

    def __init__(self, key: str, status: int = 422) -> None:
        super().__init__(key)
        self.key, self.status = key, status


def csrf_value(token: str) -> str:
    return hash_token("csrf:" + token)[:32]


def visitor(request: Request) -> Principal:
    """The signed-in caller, authenticated by the same registry as a bearer token."""
    token = read_cookie(request, COOKIE)
    principal = api_state(request).tokens.authenticate(token) if token else None
    if principal is None:
        raise SignInRequired()
    return principal


async def checked_form(request: Request, signing_in: bool = False) -> dict[str, str]:
    """The posted form, after its CSRF value is checked against the session (or, for the sign-in
    form, against ``SIGNIN_COOKIE``)."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    token = read_cookie(request, SIGNIN_COOKIE, SIGNIN_PATH) if signing_in else read_cookie(request, COOKIE)
    if not token or not hmac.compare_digest(fields.get("csrf", ""), csrf_value(token)):
        raise FormError("form.stale", 403)
    return fields


def _cookie_name(request: Request, name: str, path: str) -> str:
    """``name`` over HTTP; over HTTPS with the prefix browsers enforce: ``__Host-`` for a cookie
    of the whole site (Secure, Path=/, no Domain: a sibling subdomain cannot set or overwrite it,
    so it cannot plant its own session or sign-in value), ``__Secure-`` for a narrower path."""
    if request.url.scheme != "https":
        return name
    return ("__Host-" if path == "/" else "__Secure-") + name


def read_cookie(request: Request, name: str, path: str = "/") -> str | None:
    return request.cookies.get(_cookie_name(request, name, path))


def set_cookie(response: Response, request: Request, name: str, value: str, path: str = "/") -> None:
    """A cookie no script reads and no other site's request carries."""
    response.set_cookie(_cookie_name(request, name, path), value, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path=path)


def delete_cookie(response: Response, request: Request, name: str, path: str = "/") -> None:
    # With the attributes it was set with: a browser ignores a prefixed cookie's removal without Secure.
    response.delete_cookie(_cookie_name(request, name, path), httponly=True, samesite="strict",
                           secure=request.url.scheme == "https", path=path)


def signin_page(request: Request, status: int = 200, key: str | None = None) -> HTMLResponse:
    """The sign-in form, its CSRF value derived from the visitor's sign-in cookie (set here if new)."""
    nonce = read_cookie(request, SIGNIN_COOKIE, SIGNIN_PATH) or secrets.token_urlsafe(32)
    response = render(request, "signin.html", status, key=key, signin_csrf=csrf_value(nonce))
    set_cookie(response, request, SIGNIN_COOKIE, nonce, SIGNIN_PATH)
    return response


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    lang = language(request.headers.get("accept-language"))
    token = read_cookie(request, COOKIE)
    base = {"t": translator(lang), "lang": lang, "csrf": csrf_value(token) if token else "", "signed_in": bool(token)}
    response = templates.TemplateResponse(request, template, {**base, **context}, status_code=status)
    response.headers["Content-Language"] = lang
    response.headers["Cache-Control"] = "no-store"  # personal data: never from a shared cache
    return response


def error_page(request: Request, status: int, message: str | None = None, key: str | None = None) -> HTMLResponse:
    return render(request, "error.html", status, code=status, message=message, key=key)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def profile_url(base: str, profile_id: str, done: str | None = None) -> str:
    """A profile page's address: the id percent-encoded, since one typed into a form (or taken from
    a path) may hold ``/``, ``?`` or ``#`` and must stay one path segment, adding nothing to the query;
    ``done`` is a key of the page's notices."""
    return f"{base}/{quote(profile_id, safe='')}" + (f"?done={done}" if done else "")


def _invalid(exc: RequestValidationError) -> str:
    # Where and why, never the value: it may be a customer's data.
    return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}" for e in exc.errors())


class PageRoute(APIRoute):
    """A route answering in HTML whatever goes wrong: the API's problems become pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return signin_page(request, 401, key="session.expired" if read_cookie(request, COOKIE) else None)
            except FormError as exc:
                return error_page(request, exc.status, key=exc.key)
            except ProblemError as exc:
                return error_page(request, exc.status, exc.detail)
            except RequestValidationError as exc:
                return error_page(request, 422, _invalid(exc))
            except StoreConflict as exc:
                return error_page(request, 409, str(exc))
            except StoreUnavailable:
                return error_page(request, 503)
            except Exception:
                _log.exception("page %s failed", request.url.path)
                return error_page(request, 500)
        return page
