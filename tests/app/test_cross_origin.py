"""Cross-origin calls: MONAI Label's CORS layer (every origin answered) replaced by one that answers only the listed origins."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from lib.access_control import cors_origins, restrict_cross_origin

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}


def served_like_monailabel(origins: list[str]) -> TestClient:
    """An app with MONAI Label's own CORS layer (allow ``*``), restricted after the stack is built, as the server does."""
    app = FastAPI(middleware=[Middleware(CORSMiddleware, allow_origins=["*"], allow_credentials=True, allow_methods=["*"], allow_headers=["*"])])
    app.get("/info/")(lambda: {"name": "stroke"})
    app.middleware_stack = restrict_cross_origin(app.build_middleware_stack(), origins)
    return TestClient(app)


def allowed_origin(answer) -> str | None:
    return answer.headers.get("access-control-allow-origin")


def test_no_other_web_origin_may_call_the_server_by_default():
    client = served_like_monailabel([])
    for origin in ("https://evil.example", "http://127.0.0.1:9999"):
        assert client.options("/info/", headers={"Origin": origin, **PREFLIGHT}).status_code == 400
        answer = client.get("/info/", headers={"Origin": origin})
        assert answer.status_code == 200 and allowed_origin(answer) is None  # the browser keeps the answer from the page
    assert client.get("/info/").json() == {"name": "stroke"}  # same-origin pages and non-browser clients are unaffected


def test_a_listed_origin_may_and_look_alikes_may_not():
    client = served_like_monailabel(["https://viewer.hospital.example"])
    listed = client.options("/info/", headers={"Origin": "https://viewer.hospital.example", **PREFLIGHT})
    assert listed.status_code == 200 and allowed_origin(listed) == "https://viewer.hospital.example"
    for origin in ("https://viewer.hospital.example.evil.example", "http://viewer.hospital.example", "https://evil.example"):
        assert client.options("/info/", headers={"Origin": origin, **PREFLIGHT}).status_code == 400
        assert allowed_origin(client.get("/info/", headers={"Origin": origin})) is None


@pytest.mark.parametrize("listed, origins", [("", []), ("https://a.example/, http://b.example:8080", ["https://a.example", "http://b.example:8080"])])
def test_origins_are_read_as_browsers_send_them(monkeypatch, listed, origins):
    monkeypatch.setenv("STROKELABEL_CORS_ORIGINS", listed)
    assert cors_origins() == origins
