"""Access control without a Keycloak: a minimal OpenID Connect issuer for MONAI Label's own auth.

MONAI Label checks bearer tokens (RS256 JWTs) against the public key of an OIDC realm and reads the
user's roles from the token (``MONAI_LABEL_AUTH_*`` settings); its ``/auth/token`` endpoint passes a
user name and password on to the realm's token endpoint, which is also how the 3D Slicer plugin's
login works. Debian has no Keycloak, so this module is the realm: a users file (PBKDF2-SHA256 password
hashes and one role each), a key pair made at start (tokens do not survive a restart: users log in
again), and the three documents MONAI Label asks for, served on loopback by :func:`serve_issuer`.

Roles, as MONAI Label's endpoints require them (it has no hierarchy, so each role here lists all it
may do): ``reader`` reads studies, labels and infers; ``annotator`` also saves labels;
``admin`` also trains, publishes models and removes studies or labels.

    python -m strokelabel.access add-user users.json alice --role annotator   (asks for the password)
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

logger = logging.getLogger(__name__)

REALM_PATH = "/realms/strokelabel"
TOKEN_PATH = REALM_PATH + "/protocol/openid-connect/token"
PBKDF2_ITERATIONS = 240_000
_MONAILABEL_ROLES = {  # MONAI Label's default role names (monailabel.config)
    "user": "monailabel-user", "annotator": "monailabel-annotator", "reviewer": "monailabel-reviewer", "admin": "monailabel-admin",
}
ROLES = {
    "reader": ["user"],
    "annotator": ["user", "annotator"],
    "admin": ["user", "annotator", "reviewer", "admin"],
}
# A failed login costs this long: slows password guessing without a lockout a clinician could trip.
FAILED_LOGIN_DELAY_S = 0.5


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    expected = hash_password(password, base64.b64decode(salt), int(iterations)).split("$")[3]
    return hmac.compare_digest(expected, digest)


def load_users(path: str | Path) -> dict[str, dict]:
    """{name: {"password": hash, "role": reader|annotator|admin}}; a clear error for a bad file."""
    users = json.loads(Path(path).read_text()).get("users", {})
    for name, user in users.items():
        if user.get("role") not in ROLES or not str(user.get("password", "")).startswith("pbkdf2_sha256$"):
            raise ValueError(f"{path}: user {name!r} needs a role ({', '.join(ROLES)}) and a password hash (python -m strokelabel.access add-user)")
    return users


def add_user(path: str | Path, name: str, password: str, role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
    from strokelabel.derived import atomic_write_bytes

    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {"users": {}}
    data["users"][name] = {"password": hash_password(password), "role": role}
    atomic_write_bytes(path, json.dumps(data, indent=1).encode())
    os.chmod(path, 0o600)  # password hashes: readable by the server's user only


class Issuer:
    """The realm: users, a key pair, tokens."""

    def __init__(self, users_file: str | Path, base_url: str, token_hours: float = 8.0):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.users_file = Path(users_file)
        load_users(self.users_file)  # a bad file stops the start, not the first login
        self.base_url = base_url.rstrip("/")
        self.token_seconds = int(token_hours * 3600)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self._key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key_b64 = base64.b64encode(der).decode()  # as Keycloak publishes it: MONAI Label wraps it in PEM lines

    @property
    def realm_uri(self) -> str:
        return self.base_url + REALM_PATH

    def realm_document(self) -> dict:
        return {"realm": "strokelabel", "public_key": self.public_key_b64, "token-service": self.base_url + TOKEN_PATH}

    def openid_configuration(self) -> dict:
        return {"issuer": self.realm_uri, "token_endpoint": self.base_url + TOKEN_PATH, "grant_types_supported": ["password"],
                "id_token_signing_alg_values_supported": ["RS256"]}

    def token(self, username: str, password: str) -> dict | None:
        """A bearer token for a user whose password matches (the users file is read at each login, so
        a user added or removed counts at once); None otherwise."""
        import jwt

        user = load_users(self.users_file).get(username)
        if user is None or not verify_password(password, user["password"]):
            time.sleep(FAILED_LOGIN_DELAY_S)
            return None
        now = int(time.time())
        claims = {"iss": self.realm_uri, "sub": username, "preferred_username": username, "name": username, "iat": now,
                  "exp": now + self.token_seconds, "realm_access": {"roles": [_MONAILABEL_ROLES[r] for r in ROLES[user["role"]]]}}
        return {"access_token": jwt.encode(claims, self._key, algorithm="RS256"), "token_type": "Bearer", "expires_in": self.token_seconds}

    def user_of(self, authorization: str | None) -> str | None:
        """The user name of a valid ``Authorization: Bearer`` header (for the audit log), else None."""
        import jwt

        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        try:
            return jwt.decode(authorization[7:], self._key.public_key(), algorithms=["RS256"]).get("preferred_username")
        except jwt.InvalidTokenError:
            return None


def serve_issuer(issuer: Issuer, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the realm's documents and token endpoint in a daemon thread (for MONAI Label's own auth)."""

    class Handler(BaseHTTPRequestHandler):
        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's name)
            path = urlparse(self.path).path.rstrip("/")
            if path == REALM_PATH:
                return self._json(200, issuer.realm_document())
            if path == REALM_PATH + "/.well-known/openid-configuration":
                return self._json(200, issuer.openid_configuration())
            return self._json(404, {"error": "not_found"})

        def do_POST(self):  # noqa: N802
            if urlparse(self.path).path != TOKEN_PATH:
                return self._json(404, {"error": "not_found"})
            length = min(int(self.headers.get("Content-Length") or 0), 16384)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode(errors="replace")).items()}
            if form.get("grant_type") != "password":
                return self._json(400, {"error": "unsupported_grant_type"})
            token = issuer.token(form.get("username", ""), form.get("password", ""))
            if token is None:
                return self._json(401, {"error": "invalid_grant", "error_description": "Invalid user credentials"})
            return self._json(200, token)

        def log_message(self, *args):  # the audit log records logins; no request lines with user names here
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="strokelabel-issuer", daemon=True).start()
    logger.info("access control: token issuer on %s:%d%s", host, port, REALM_PATH)
    return server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strokelabel.access", description="Manage the users of the server's access control.")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add-user", help="add a user or change a user's password and role")
    add.add_argument("users_file")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=list(ROLES))
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input (scripts)")
    args = parser.parse_args(argv)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(f"password for {args.name}: ")
    if len(password) < 10:
        print("a password needs at least 10 characters", file=sys.stderr)
        return 2
    add_user(args.users_file, args.name, password, args.role)
    print(f"{args.name}: {args.role} in {args.users_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
