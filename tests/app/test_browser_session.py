"""Browser login for the bundled viewers: /login puts the realm's token in an HttpOnly, SameSite=Strict cookie, calls
carrying it are the user's calls, a viewer page without a valid session goes to /login, and nothing redirects off-site."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Header
from starlette.testclient import TestClient

from lib.access_control import SESSION_COOKIE, BrowserSession, _add_login_routes, _safe_next
from strokelabel.access import Issuer, add_user


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    users = tmp_path_factory.mktemp("session") / "users.json"
    add_user(users, "anna", "annotator-password-2", "annotator")
    return Issuer(users, "http://127.0.0.1:1")


@pytest.fixture()
def client(issuer):
    app = FastAPI()

    @app.get("/info/")
    def info(authorization: str | None = Header(None)):
        return {"user": issuer.user_of(authorization)}

    app.get("/ohif/{route:path}")(lambda route: {"page": route or "viewer"})
    _add_login_routes(app, issuer)
    app.middleware_stack = BrowserSession(app.build_middleware_stack(), issuer)
    return TestClient(app, base_url="http://testserver")


def test_logging_in_sets_a_session_cookie_that_scripts_cannot_read_and_other_sites_cannot_send(client):
    answer = client.post("/login", data={"username": "anna", "password": "annotator-password-2", "next": "/ohif/?StudyInstanceUIDs=1.2"},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ohif/?StudyInstanceUIDs=1.2"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Max-Age=28800" in cookie and "Secure" not in cookie  # plain http here; https sets Secure
    assert client.get("/info/").json() == {"user": "anna"}  # the cookie is the user's token


def test_a_wrong_password_is_a_401_with_the_form_again_and_no_cookie(client):
    answer = client.post("/login", data={"username": "anna", "password": "wrong", "next": "/ohif/"}, follow_redirects=False)
    assert answer.status_code == 401 and "Wrong user name or password" in answer.text and "set-cookie" not in answer.headers
    assert client.get("/info/").json() == {"user": None}


HTML = {"Accept": "text/html,application/xhtml+xml"}  # what a browser's navigation asks for


def test_a_viewer_page_without_a_valid_session_goes_to_the_login_page_and_back(client):
    answer = client.get("/ohif/monai-label", params={"StudyInstanceUIDs": "1.2"}, headers=HTML, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Fohif%2Fmonai-label%3FStudyInstanceUIDs%3D1.2"
    assert client.get("/ohif/app.bundle.js", follow_redirects=False).status_code == 200  # a script is not a page: no redirect
    page = client.get(answer.headers["location"])
    assert page.status_code == 200 and 'value="/ohif/monai-label?StudyInstanceUIDs=1.2"' in page.text
    client.cookies.set(SESSION_COOKIE, "not-a-token")
    assert client.get("/ohif/", headers=HTML, follow_redirects=False).status_code == 303  # a forged cookie is no session
    client.cookies.clear()
    client.post("/login", data={"username": "anna", "password": "annotator-password-2"}, follow_redirects=False)
    assert client.get("/ohif/", headers=HTML, follow_redirects=False).json() == {"page": "viewer"}


def test_an_authorization_header_wins_over_the_cookie_and_logout_ends_the_session(client, issuer):
    client.post("/login", data={"username": "anna", "password": "annotator-password-2"}, follow_redirects=False)
    assert client.get("/info/", headers={"Authorization": "Bearer forged"}).json() == {"user": None}
    answer = client.post("/logout", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login" and f'{SESSION_COOKIE}=""' in answer.headers["set-cookie"]
    assert client.get("/info/").json() == {"user": None}


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "", None])
def test_the_page_after_login_is_never_off_this_server(target):
    assert _safe_next(target) == "/ohif3/"
    assert _safe_next("/ohif3/viewer?StudyInstanceUIDs=1") == "/ohif3/viewer?StudyInstanceUIDs=1"
