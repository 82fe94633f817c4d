"""The address the server scripts listen on: loopback unless a network is asked for explicitly (no access control yet)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.server import REPO


def host_of(env: dict, *args: str) -> subprocess.CompletedProcess:
    script = f'source "{REPO}/scripts/server_host.sh" "$@"; echo "$HOST"'
    clean = {k: v for k, v in os.environ.items() if k not in ("HOST", "STROKELABEL_ALLOW_NETWORK", "STROKELABEL_USERS_FILE", "PORT")}
    return subprocess.run(["bash", "-c", script, "host", *args], env={**clean, **env}, capture_output=True, text=True)


def test_the_server_listens_on_loopback_by_default():
    run = host_of({})
    assert run.returncode == 0 and run.stdout.strip() == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3"])
def test_a_network_address_is_refused_unless_allowed_explicitly(host):
    run = host_of({"HOST": host})
    assert run.returncode == 2 and "without access control" in run.stderr and run.stdout == ""
    allowed = host_of({"HOST": host, "STROKELABEL_ALLOW_NETWORK": "1"})
    assert allowed.returncode == 0 and allowed.stdout.strip() == host and "without access control" in allowed.stderr


def test_the_host_cannot_be_slipped_in_as_an_argument():
    run = host_of({}, "--host", "0.0.0.0")
    assert run.returncode == 2 and "HOST=" in run.stderr


def test_a_users_file_turns_access_control_on_and_allows_a_network(tmp_path):
    users = tmp_path / "users.json"
    users.write_text('{"users": {}}')
    script = f'source "{REPO}/scripts/server_host.sh"; echo "$HOST $MONAI_LABEL_AUTH_ENABLE $MONAI_LABEL_AUTH_REALM_URI"'
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONAI_LABEL_AUTH", "STROKELABEL_"))}
    run = subprocess.run(["bash", "-c", script], env={**env, "HOST": "0.0.0.0", "PORT": "9000", "STROKELABEL_USERS_FILE": str(users)},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0.0.0.0", "true", "http://127.0.0.1:9001/realms/strokelabel"]
    missing = subprocess.run(["bash", "-c", script], env={**env, "STROKELABEL_USERS_FILE": str(tmp_path / "none.json")}, capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
