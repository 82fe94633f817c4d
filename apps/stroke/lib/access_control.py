"""The server's access control and its records, wired into MONAI Label's running FastAPI app.

- With ``MONAI_LABEL_AUTH_ENABLE=true`` and ``STROKELABEL_USERS_FILE`` (``scripts/server_host.sh`` and
  ``run_server.sh`` set both when a users file is given), the realm MONAI Label checks tokens against
  is :mod:`strokelabel.access`, served on the loopback address of ``MONAI_LABEL_AUTH_REALM_URI``; the
  server's ``/auth/token`` answers a wrong password with 401 (MONAI Label's own turns the realm's 401
  into a 500).
- An audit log (``<app>/logs/audit.log``, one JSON line per call): who, when, what (infer, read,
  saved label, training, model), which study, tag, model, and the answer's status. Study ids are the
  datastore's (pseudonymous folder names or DICOM UIDs); no patient name or ID is written.
- Uploads larger than ``STROKELABEL_MAX_UPLOAD_MB`` (default 1024) are refused with 413 before the
  body is read.
- Cross-origin calls (a web page served from elsewhere calling the server from a browser): answered only for
  the origins in ``STROKELABEL_CORS_ORIGINS`` (comma-separated; none by default: the bundled viewers are served
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
from urllib.parse import parse_qs, urlparse

from fastapi import Form, HTTPException

from strokelabel.access import Issuer, serve_issuer

logger = logging.getLogger(__name__)

USERS_FILE_ENV = "STROKELABEL_USERS_FILE"
CORS_ORIGINS_ENV = "STROKELABEL_CORS_ORIGINS"
MAX_UPLOAD_MB = float(os.environ.get("STROKELABEL_MAX_UPLOAD_MB", 1024))
# Calls worth a line in the audit log (static viewer files are not).
AUDITED_PREFIXES = ("/infer", "/datastore", "/train", "/model", "/activelearning", "/scoring", "/batch", "/auth/token", "/proxy", "/stroke")


def install(fastapi_app, app_dir: str) -> Issuer | None:
    """Wire access control (if on), the audit log and the upload limit into the running server."""
    from monailabel.config import settings

    issuer = None
    if settings.MONAI_LABEL_AUTH_ENABLE:
        _let_monailabel_check_tokens()
    if settings.MONAI_LABEL_AUTH_ENABLE and os.environ.get(USERS_FILE_ENV):
        issuer = _start_issuer(settings.MONAI_LABEL_AUTH_REALM_URI, os.environ[USERS_FILE_ENV])
        _add_token_route(fastapi_app, issuer)
    audit_path = Path(app_dir) / "logs" / "audit.log"
    audit_path.parent.mkdir(parents=True, exist_ok=True)
    stack = restrict_cross_origin(fastapi_app.middleware_stack or fastapi_app.build_middleware_stack(), cors_origins())
    fastapi_app.middleware_stack = AuditLog(UploadLimit(stack, MAX_UPLOAD_MB), audit_path, issuer)
    logger.info("audit log: %s; uploads up to %.0f MB; access control %s", audit_path, MAX_UPLOAD_MB,
                "on (users in $%s)" % USERS_FILE_ENV if issuer else ("on (external realm)" if settings.MONAI_LABEL_AUTH_ENABLE else "off"))
    return issuer


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
        line = json.dumps({k: v for k, v in entry.items() if v not in (None, "")}) + "\n"
        with open(self.path, "a") as f:  # one short line per write: appends stay whole
            f.write(line)
