"""The server's access control and its records, wired into MONAI Label's running FastAPI app.

- With ``MONAI_LABEL_AUTH_ENABLE=true`` and ``STROKELABEL_USERS_FILE`` (``scripts/server_host.sh`` and
  ``run_server.sh`` set both when a users file is given), the realm MONAI Label checks tokens against
  is :mod:`strokelabel.access`, served on the loopback address of ``MONAI_LABEL_AUTH_REALM_URI``; the
  server's ``/auth/token`` answers a wrong password with 401 (MONAI Label's own turns the realm's 401
  into a 500).
- An audit log (``<app>/logs/audit.log``, one JSON line per call): who, when, what (infer, read,
  saved label, training, model), which study, tag, model, and the answer's status. Study ids are the
  datastore's (pseudonymous folder names or DICOM UIDs); no patient name or ID is written.
- Browsers (the web viewer, OHIF 3.13 at ``/ohif3/``, which has no login of its own) log in at ``/login``: the token goes
  into an HttpOnly, SameSite=Strict cookie, which the server reads as the call's ``Authorization`` header
  (:class:`BrowserSession`); a viewer page opened without a valid session is sent to ``/login`` first.
- Uploads larger than ``STROKELABEL_MAX_UPLOAD_MB`` (default 1024) are refused with 413 before the
  body is read.
- Cross-origin calls (a web page served from elsewhere calling the server from a browser): answered only for
  the origins in ``STROKELABEL_CORS_ORIGINS`` (comma-separated; none by default: the web viewer is served
  by the server itself, where CORS does not apply). MONAI Label answers every origin unless
  ``MONAI_LABEL_CORS_ORIGINS`` is set, and 0.8.5's ``start_server`` stops with a TypeError when it is.

Added as plain ASGI wrappers around the app's built middleware stack: the app instance (and so this
module) comes to life inside MONAI Label's lifespan, after Starlette has frozen ``add_middleware``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

from html import escape

from fastapi import Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from strokelabel.access import Issuer, serve_issuer

logger = logging.getLogger(__name__)

USERS_FILE_ENV = "STROKELABEL_USERS_FILE"
CORS_ORIGINS_ENV = "STROKELABEL_CORS_ORIGINS"
MAX_UPLOAD_MB = float(os.environ.get("STROKELABEL_MAX_UPLOAD_MB", 1024))
# Calls worth a line in the audit log (static viewer files are not).
AUDITED_PREFIXES = ("/infer", "/datastore", "/train", "/model", "/activelearning", "/scoring", "/batch", "/auth/token", "/proxy", "/stroke",
                    "/logs")


def install(fastapi_app, app_dir: str) -> Issuer | None:
    """Wire access control (if on), the audit log and the upload limit into the running server."""
    from monailabel.config import settings

    issuer = None
    if settings.MONAI_LABEL_AUTH_ENABLE:
        _let_monailabel_check_tokens()
    if settings.MONAI_LABEL_AUTH_ENABLE and os.environ.get(USERS_FILE_ENV):
        issuer = _start_issuer(settings.MONAI_LABEL_AUTH_REALM_URI, os.environ[USERS_FILE_ENV])
        _add_token_route(fastapi_app, issuer)
        _add_login_routes(fastapi_app, issuer)
    audit_path = Path(app_dir) / "logs" / "audit.log"
    audit_path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("uvicorn.access").addFilter(WithholdProxyQueries())
    stack = restrict_cross_origin(fastapi_app.middleware_stack or fastapi_app.build_middleware_stack(), cors_origins())
    stack = AuditLog(UploadLimit(stack, MAX_UPLOAD_MB), audit_path, issuer)
    fastapi_app.middleware_stack = BrowserSession(stack, issuer) if issuer else stack
    logger.info("audit log: %s; uploads up to %.0f MB; access control %s", audit_path, MAX_UPLOAD_MB,
                "on (users in $%s)" % USERS_FILE_ENV if issuer else ("on (external realm)" if settings.MONAI_LABEL_AUTH_ENABLE else "off"))
    return issuer


class WithholdProxyQueries(logging.Filter):
    """uvicorn's access log (off by default; ``--access_log``) would print the DICOMweb proxy's query strings
    whole, and OHIF's study search puts patient names and IDs there (``?PatientName=...``): the server log
    carries no patient identifier, so the query of a ``/proxy`` call is withheld."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and args[2].startswith("/proxy") and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?<query withheld>", *args[3:])
        return True


def cors_origins() -> list[str]:
    """The web origins allowed to call the server cross-origin (``STROKELABEL_CORS_ORIGINS``), as browsers write them."""
    listed = os.environ.get(CORS_ORIGINS_ENV, "")
    return [origin.strip().rstrip("/") for origin in listed.split(",") if origin.strip()]


def restrict_cross_origin(stack, origins: list[str]):
    """``stack`` with MONAI Label's CORS layer answering only ``origins`` (it is built before this app exists,
    so the layer is replaced in the chain rather than configured)."""
    from starlette.middleware.cors import CORSMiddleware

    def restricted(app):
        return CORSMiddleware(app, allow_origins=origins, allow_credentials=True, allow_methods=["*"], allow_headers=["*"])

    logger.info("cross-origin calls answered for: %s", ", ".join(origins) or "no other web origin")
    parent, layer = None, stack
    while layer is not None and not isinstance(layer, CORSMiddleware):
        parent, layer = layer, getattr(layer, "app", None)
    if layer is None:
        return restricted(stack)
    if parent is None:
        return restricted(layer.app)
    parent.app = restricted(layer.app)
    return stack


def _let_monailabel_check_tokens() -> None:
    """monailabel 0.8.5 checks a token with ``jwt.decode(token, key, options=...)``, which PyJWT 2 refuses
    without ``algorithms``: every token, even a valid one, is a 401 ("It is required that you pass in a
    value for the algorithms argument"). Its auth module is given a ``jwt`` whose ``decode`` names the
    realm's algorithm (RS256, as Keycloak's and ours sign); nothing else of it changes."""
    import functools
    import types

    import jwt
    import monailabel.endpoints.user.auth as monailabel_auth

    if getattr(monailabel_auth.jwt, "decode", None) is jwt.decode:
        monailabel_auth.jwt = types.SimpleNamespace(decode=functools.partial(jwt.decode, algorithms=["RS256"]))


def _start_issuer(realm_uri: str, users_file: str) -> Issuer:
    url = urlparse(realm_uri)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise RuntimeError(f"MONAI_LABEL_AUTH_REALM_URI {realm_uri}: the built-in realm serves on loopback only (127.0.0.1)")
    issuer = Issuer(users_file, f"{url.scheme}://{url.hostname}:{url.port}")
    serve_issuer(issuer, url.hostname, url.port)
    return issuer


def _add_token_route(fastapi_app, issuer: Issuer) -> None:
    """``POST /auth/token`` (the 3D Slicer plugin's and MONAI Label client's login) answered here, in front of MONAI Label's."""

    def token(username: str = Form(...), password: str = Form(...), grant_type: str = Form("password")):
        if grant_type != "password":
            raise HTTPException(status_code=400, detail=f"grant_type {grant_type!r}: only password")
        answer = issuer.token(username, password)
        if answer is None:
            raise HTTPException(status_code=401, detail="invalid user name or password", headers={"WWW-Authenticate": "Bearer"})
        return answer

    fastapi_app.add_api_route("/auth/token", token, methods=["POST"], include_in_schema=False)
    fastapi_app.router.routes.insert(0, fastapi_app.router.routes.pop())


SESSION_COOKIE = "strokelabel_session"
VIEWER_PAGES = ("/ohif3", "/ohif")  # the web viewer's paths; /ohif: the retired 3.10's bookmarks, sent on to /ohif3/
LOGIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>StrokeLabel: log in</title>
<style>body{{font-family:sans-serif;background:#111;color:#eee;display:flex;justify-content:center;margin-top:12vh}}
form{{display:flex;flex-direction:column;gap:.6em;min-width:18em}}input,button{{font-size:1em;padding:.4em}}.error{{color:#f77}}</style></head>
<body><form method="post" action="/login"><h2>StrokeLabel</h2>{message}
<label>User name <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{next}"><button type="submit">Log in</button></form></body></html>
"""


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this server only (never ``//host`` or a URL: no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/ohif3/"
    return target


def _add_login_routes(fastapi_app, issuer: Issuer) -> None:
    """``/login`` (form) and ``/logout`` for browsers; a wrong password is a 401 with the form again."""
    def form(next: str = "/ohif3/", message: str = "", status: int = 200) -> HTMLResponse:
        note = f'<p class="error">{escape(message)}</p>' if message else ""
        return HTMLResponse(LOGIN_PAGE.format(message=note, next=escape(_safe_next(next), quote=True)), status_code=status,
                            headers={"Cache-Control": "no-store"})

    def login(request: Request, username: str = Form(...), password: str = Form(...), next: str = Form("/ohif3/")):
        answer = issuer.token(username, password)
        if answer is None:
            return form(next, "Wrong user name or password.", 401)
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(SESSION_COOKIE, answer["access_token"], max_age=answer["expires_in"], path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    def logout():
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    fastapi_app.add_api_route("/login", form, methods=["GET"], include_in_schema=False)
    fastapi_app.add_api_route("/login", login, methods=["POST"], include_in_schema=False)
    fastapi_app.add_api_route("/logout", logout, methods=["GET", "POST"], include_in_schema=False)
    for _ in range(3):  # in front of MONAI Label's catch-all routes
        fastapi_app.router.routes.insert(0, fastapi_app.router.routes.pop())


class BrowserSession:
    """A call carrying the login cookie and no ``Authorization`` header gets ``Authorization: Bearer <cookie>``, so
    MONAI Label's role checks and the audit log treat it as the same user's token; a viewer page (GET) opened
    without a valid session is redirected to ``/login``. SameSite=Strict keeps other sites' pages from sending the
    cookie (and CORS answers only the listed origins)."""

    def __init__(self, app, issuer: Issuer):
        self.app, self.issuer = app, issuer

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = list(scope.get("headers") or [])
            if any(k == b"authorization" for k, _ in headers):  # a client with its own token: nothing to do
                return await self.app(scope, receive, send)
            token = _cookie(headers, SESSION_COOKIE)
            if token:
                scope = dict(scope, headers=headers + [(b"authorization", b"Bearer " + token.encode("latin-1"))])
            if scope["method"] == "GET" and _is_viewer_page(scope["path"], headers) and (not token or self.issuer.user_of("Bearer " + token) is None):
                query = scope.get("query_string", b"").decode("latin-1")
                target = quote(scope["path"] + ("?" + query if query else ""), safe="")
                await send({"type": "http.response.start", "status": 303, "headers": [(b"location", f"/login?next={target}".encode()),
                                                                                     (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)


def _cookie(headers, name: str) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    for key, value in headers:
        if key == b"cookie":
            try:
                jar = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                return None
            if name in jar:
                return jar[name].value or None
    return None


def _is_viewer_page(path: str, headers) -> bool:
    """A browser opening a page of a viewer: any path of it (OHIF's own routes, /ohif3/stroke, /ohif3/viewer, are
    pages too) asked for as HTML, as a navigation asks; its scripts and data are fetched as other types."""
    accept = dict(headers).get(b"accept", b"").decode("latin-1")
    return "text/html" in accept and any(path == p or path.startswith(p + "/") for p in VIEWER_PAGES)


class UploadLimit:
    """413 for a request whose declared body is larger than the limit (checked before it is read)."""

    def __init__(self, app, max_mb: float):
        self.app, self.max_bytes = app, int(max_mb * 2**20)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                body = json.dumps({"detail": f"the upload is {int(length) / 2**20:.0f} MB, more than the {self.max_bytes / 2**20:.0f} MB "
                                             "this server accepts (STROKELABEL_MAX_UPLOAD_MB)"}).encode()
                await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"),
                                                                                     (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class AuditLog:
    """One JSON line per audited call: time, user, method, path, study, tag, model, status."""

    def __init__(self, app, path: Path, issuer: Issuer | None):
        self.app, self.path, self.issuer = app, path, issuer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(AUDITED_PREFIXES):
            return await self.app(scope, receive, send)
        status = {}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self._write(scope, status.get("code", 500))

    def _write(self, scope, status: int) -> None:
        headers = dict(scope.get("headers") or [])
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode(errors="replace")).items()}
        authorization = headers.get(b"authorization", b"").decode(errors="replace")
        user = self.issuer.user_of(authorization) if self.issuer else None
        path = scope["path"]
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "user": user or ("anonymous" if authorization == "" else "unverified"),
                 "method": scope["method"], "path": path if not path.startswith("/proxy") else "/proxy/dicom",
                 "study": query.get("image") or query.get("label") or query.get("id"), "tag": query.get("tag"),
                 "model": path.split("/")[2] if path.startswith(("/infer/", "/train/")) and len(path.split("/")) > 2 else None,
                 "status": status}
        append_audit(self.path, entry)


def append_audit(path: Path, entry: dict) -> None:
    """One JSON line in the audit log (empty fields left out)."""
    line = json.dumps({k: v for k, v in entry.items() if v not in (None, "")}) + "\n"
    with open(path, "a") as f:  # one short line per write: appends stay whole
        f.write(line)


def audit_event(app_dir, entry: dict) -> None:
    """A line for something that is not one HTTP call's own answer (a change of the model in use, also from a
    training child), in the same log and format: time first, then who, what and the outcome."""
    path = Path(app_dir) / "logs" / "audit.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    append_audit(path, {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry})
