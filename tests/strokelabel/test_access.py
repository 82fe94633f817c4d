"""The built-in realm: password hashes, users file, tokens MONAI Label can check, the issuer's HTTP documents."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

import jwt
import pytest

from strokelabel.access import ROLES, Issuer, add_user, hash_password, load_users, main, serve_issuer, verify_password
from tests.e2e.server import free_port


def test_a_password_hash_verifies_only_its_password_and_is_salted():
    stored = hash_password("correct horse battery")
    assert verify_password("correct horse battery", stored) and not verify_password("correct horse batterY", stored)
    assert hash_password("correct horse battery") != stored and not verify_password("x", "md5$1$2$3")


def test_a_users_file_needs_a_role_and_a_hash_for_each_user(tmp_path):
    path = tmp_path / "users.json"
    add_user(path, "anna", "annotator-pass", "annotator")
    assert load_users(path)["anna"]["role"] == "annotator" and "annotator-pass" not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text(json.dumps({"users": {"eve": {"password": "plain", "role": "admin"}}}))
    with pytest.raises(ValueError, match="'eve' needs a role"):
        load_users(path)
    with pytest.raises(ValueError, match="role 'god'"):
        add_user(tmp_path / "other.json", "x", "long-enough-pass", "god")


def test_the_cli_refuses_a_short_password(tmp_path, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["add-user", str(tmp_path / "u.json"), "bob", "--role", "reader", "--password-stdin"]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("long enough password\n"))
    assert main(["add-user", str(tmp_path / "u.json"), "bob", "--role", "reader", "--password-stdin"]) == 0
    assert load_users(tmp_path / "u.json")["bob"]["role"] == "reader"


def test_tokens_carry_the_roles_monailabel_checks_and_verify_with_the_published_key(tmp_path):
    users = tmp_path / "users.json"
    add_user(users, "adam", "admin-password", "admin")
    add_user(users, "rita", "reader-password", "reader")
    port = free_port()
    issuer = Issuer(users, f"http://127.0.0.1:{port}")
    server = serve_issuer(issuer, "127.0.0.1", port)
    try:
        realm = json.load(urllib.request.urlopen(issuer.realm_uri, timeout=10))
        config = json.load(urllib.request.urlopen(issuer.realm_uri + "/.well-known/openid-configuration", timeout=10))
        form = urllib.parse.urlencode({"username": "rita", "password": "reader-password", "grant_type": "password"}).encode()
        token = json.load(urllib.request.urlopen(config["token_endpoint"], data=form, timeout=10))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(config["token_endpoint"], data=form.replace(b"reader-password", b"wrong"), timeout=10)
        assert refused.value.code == 401
    finally:
        server.shutdown()
    pem = f"-----BEGIN PUBLIC KEY-----\n{realm['public_key']}\n-----END PUBLIC KEY-----"  # as MONAI Label builds it
    claims = jwt.decode(token["access_token"], pem, algorithms=["RS256"])
    assert claims["preferred_username"] == "rita" and claims["realm_access"]["roles"] == ["monailabel-user"]
    admin = jwt.decode(issuer.token("adam", "admin-password")["access_token"], pem, algorithms=["RS256"])
    assert len(admin["realm_access"]["roles"]) == len(ROLES["admin"]) == 4
    assert issuer.user_of("Bearer " + token["access_token"]) == "rita" and issuer.user_of("Bearer x.y.z") is None
    assert base64.b64decode(realm["public_key"])  # DER, base64, as Keycloak publishes it
