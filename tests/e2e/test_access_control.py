"""Access control on the real server, driven by MONAI Label's own client as the 3D Slicer plugin logs in: users and
roles from a users file, tokens from the app's built-in realm, 401 without or with a bad token or password, 403 for
a role that may not, and an audit log of who did what to which study."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from strokelabel.access import add_user
from strokelabel.phantom.study import generate_study
from tests.e2e.server import free_port, running_server

pytestmark = pytest.mark.e2e
PASSWORDS = {"rita": "reader-password-1", "anna": "annotator-password-2", "adam": "admin-password-3"}
ROLES = {"rita": "reader", "anna": "annotator", "adam": "admin"}
VIEWER_ORIGIN = "https://viewer.hospital.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("access")
    users = work / "users.json"
    for name, role in ROLES.items():
        add_user(users, name, PASSWORDS[name], role)
    generate_study(work / "studies", "mri", "acc1", seed=4505)
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": f"http://127.0.0.1:{free_port()}/realms/strokelabel",
           "STROKELABEL_USERS_FILE": str(users), "STROKELABEL_MAX_UPLOAD_MB": "8", "STROKELABEL_CORS_ORIGINS": VIEWER_ORIGIN}
    with running_server(work / "server", work / "studies", models="ischemic_lesion", env=env) as srv:
        yield srv


def client_of(server, tmp_path, name=None, password=None) -> MONAILabelClient:
    client = MONAILabelClient(f"http://127.0.0.1:{server.port}", tmpdir=str(tmp_path))
    if name:
        client.update_auth(client.auth_token(name, password or PASSWORDS[name]))
    return client


def status_of(call) -> int:
    with pytest.raises(MONAILabelClientException) as error:
        call()
    return int(str(error.value.msg).split("Status: ")[1].split(";")[0])


def test_who_may_do_what(server, tmp_path):
    anonymous = client_of(server, tmp_path)
    assert anonymous.auth_enabled()
    assert status_of(anonymous.info) == 401
    assert status_of(lambda: anonymous.auth_token("anna", "wrong-password")) == 401  # not MONAI Label's 500
    assert status_of(lambda: anonymous.auth_token("nobody", "whatever-it-is")) == 401

    reader, annotator, admin = (client_of(server, tmp_path, name) for name in ("rita", "anna", "adam"))
    image_id = next(iter(reader.datastore()["objects"]))
    assert reader.auth_valid_token() and reader.info()["models"]["ischemic_lesion"]
    label_file, result = reader.infer("ischemic_lesion", image_id, {"method": "baseline"})
    assert result["lesion_volume_ml"] >= 0
    assert status_of(lambda: reader.save_label(image_id, label_file, tag="final")) == 403
    annotator.save_label(image_id, label_file, tag="final")
    assert "final" in annotator.datastore()["objects"][image_id]["labels"]
    assert status_of(lambda: annotator.train_start("ischemic_lesion_mri", {"max_epochs": 1})) == 403
    assert status_of(lambda: reader.train_start("ischemic_lesion_mri", {"max_epochs": 1})) == 403

    # A token changed by hand is no token.
    forged = client_of(server, tmp_path)
    token = annotator._headers["Authorization"]
    forged._headers["Authorization"] = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    assert status_of(forged.info) == 401

    # The audit log: who saved which study's label, who was refused; never a password.
    audit = [json.loads(line) for line in (server.app_dir / "logs" / "audit.log").read_text().splitlines()]
    saved = [e for e in audit if e["path"] == "/datastore/label" and e["method"] == "PUT"]
    assert {(e["user"], e["study"], e["tag"], e["status"]) for e in saved} == {("rita", image_id, "final", 403), ("anna", image_id, "final", 200)}
    assert any(e["user"] == "rita" and e["path"].startswith("/infer/ischemic_lesion") and e["status"] == 200 and e["study"] == image_id for e in audit)
    assert any(e["user"] == "anonymous" and e["path"] == "/auth/token" and e["status"] == 401 for e in audit)
    for text in (server.log.read_text(), (server.app_dir / "logs" / "audit.log").read_text()):
        assert not any(password in text for password in PASSWORDS.values())


def test_an_admin_may_train_and_uploads_beyond_the_limit_are_refused(server, tmp_path):
    admin = client_of(server, tmp_path, "adam")
    started = admin.train_start("ischemic_lesion_mri", {"max_epochs": 1, "device": "cpu", "dataset": "Dataset"})
    assert started is not None
    admin.train_stop()
    big = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(np.zeros((512, 512, 20), np.float32), np.eye(4)), str(big))  # 20 MB > the test's 8 MB limit
    assert status_of(lambda: admin.upload_image(str(big), image_id="sub-big_ses-01_dwi")) == 413


def test_only_listed_web_origins_may_call_the_server(server):
    """A page from a listed origin may call the server from a browser; a page from anywhere else may not
    (refused preflight, no Access-Control-Allow-Origin on the answer), with or without a token."""
    url = f"http://127.0.0.1:{server.port}/info/"
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    listed = requests.options(url, headers={"Origin": VIEWER_ORIGIN, **preflight}, timeout=30)
    assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == VIEWER_ORIGIN
    assert requests.get(url, headers={"Origin": VIEWER_ORIGIN}, timeout=30).headers.get("access-control-allow-origin") == VIEWER_ORIGIN
    for foreign in ("https://evil.example", f"{VIEWER_ORIGIN}.evil.example", f"http://127.0.0.1:{server.port + 7}"):
        refused = requests.options(url, headers={"Origin": foreign, **preflight}, timeout=30)
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        assert "access-control-allow-origin" not in requests.get(url, headers={"Origin": foreign}, timeout=30).headers


def test_a_browser_logs_in_to_open_the_bundled_viewer_and_its_calls_are_the_users(server):
    """The OHIF viewers have no login of their own: a browser opening one is sent to /login, and after it the session
    cookie makes the viewer page and its API calls the user's (roles and the audit log as with a token)."""
    base = f"http://127.0.0.1:{server.port}"
    browser = requests.Session()
    browser.headers["Accept"] = "text/html,application/xhtml+xml,*/*;q=0.8"  # as a browser asks for a page
    sent = browser.get(f"{base}/ohif3/", allow_redirects=False, timeout=30)
    assert sent.status_code == 303 and sent.headers["location"] == "/login?next=%2Fohif3%2F"
    assert browser.get(base + sent.headers["location"], timeout=30).status_code == 200
    assert browser.post(f"{base}/login", data={"username": "rita", "password": "wrong", "next": "/ohif3/"}, timeout=30).status_code == 401
    logged_in = browser.post(f"{base}/login", data={"username": "rita", "password": PASSWORDS["rita"], "next": "/ohif3/"}, timeout=30)
    # Back to the viewer's page as the user; in folder mode it says where the viewers are (tests/e2e/test_browser_stroke.py opens it on a PACS).
    assert logged_in.url == f"{base}/ohif3/" and logged_in.status_code == 404 and "3D Slicer" in logged_in.json()["detail"]
    # The retired bundled OHIF 3.10 is no longer served, as a page or as its files.
    retired = browser.get(f"{base}/ohif/", timeout=30)
    assert retired.status_code == 404 and "retired" in retired.json()["detail"] and "/ohif3/" in retired.json()["detail"]
    assert browser.get(f"{base}/static/ohif/index.html", timeout=30).status_code == 404
    image_id = next(iter(browser.get(f"{base}/datastore/?output=all", timeout=30).json()["objects"]))
    assert browser.post(f"{base}/infer/ischemic_lesion?image={image_id}&output=json", json={"method": "baseline"}, timeout=120).status_code == 200
    label = browser.get(f"{base}/datastore/image?image={image_id}", timeout=60)
    assert label.status_code == 200
    refused = browser.put(f"{base}/datastore/label?image={image_id}&tag=final", files={"label": ("l.nii.gz", b"x")}, timeout=30)
    assert refused.status_code == 403  # a reader's session may not save a label
    # ... nor store one through the viewer's PACS proxy (STOW-RS: how /ohif3/ saves); reading through it stays open to
    # a reader (here 404: folder mode has no PACS, said after the role check).
    assert browser.post(f"{base}/proxy/dicom/stow/studies", data=b"x", headers={"Content-Type": "application/dicom"}, timeout=30).status_code == 403
    assert browser.get(f"{base}/proxy/dicom/qido/studies", timeout=30).status_code == 404
    annotator = requests.Session()
    annotator.post(f"{base}/login", data={"username": "anna", "password": PASSWORDS["anna"], "next": "/ohif3/"}, timeout=30)
    assert annotator.post(f"{base}/proxy/dicom/stow/studies", data=b"x", headers={"Content-Type": "application/dicom"}, timeout=30).status_code == 404
    browser.post(f"{base}/logout", timeout=30)
    assert browser.get(f"{base}/info/", timeout=30).status_code == 401
    audit = [json.loads(line) for line in (server.app_dir / "logs" / "audit.log").read_text().splitlines()]
    assert any(e["user"] == "rita" and e["path"] == "/infer/ischemic_lesion" and e["study"] == image_id and e["status"] == 200 for e in audit)


def test_only_an_admin_changes_the_model_in_use_or_reads_the_server_log(server, tmp_path):
    """Versions are listed to any user; putting one in use, retiring the published model, uploading weights (which
    MONAI Label lets an annotator do) and reading /logs/ take the admin role; every refusal is in the audit log."""
    base = f"http://127.0.0.1:{server.port}"
    tokens = {name: MONAILabelClient(base, tmpdir=str(tmp_path)).auth_token(name, PASSWORDS[name])["access_token"] for name in ROLES}

    def as_user(name, method, path, **kwargs):
        headers = {"Authorization": f"Bearer {tokens[name]}"} if name else {}
        return requests.request(method, base + path, headers=headers, timeout=120, **kwargs)

    model = "ischemic_lesion_mri"
    listing = as_user("rita", "GET", f"/model/{model}/versions")
    assert listing.status_code == 200 and listing.json()["in_use"] == "shipped"
    for name in (None, "rita", "anna"):
        expected = 401 if name is None else 403
        assert as_user(name, "POST", f"/model/{model}/versions/shipped/use").status_code == expected
        assert as_user(name, "DELETE", f"/model/{model}").status_code == expected
        assert as_user(name, "PUT", f"/model/{model}", files={"file": ("m.pt", b"x")}).status_code == expected
        assert as_user(name, "GET", "/logs/?text=true").status_code == expected
    assert as_user("adam", "POST", f"/model/{model}/versions/shipped/use").json()["changed"] is False  # already in use
    refused = as_user("adam", "DELETE", f"/model/{model}")
    assert refused.status_code == 409 and "never deletes it" in refused.json()["detail"]
    assert as_user("adam", "GET", "/logs/?text=true").status_code == 200
    several = as_user("adam", "DELETE", "/model/ischemic_lesion")  # the task, not one of its three models
    assert several.status_code == 400 and "ischemic_lesion_mri" in several.json()["detail"]
    audit = [json.loads(line) for line in (server.app_dir / "logs" / "audit.log").read_text().splitlines()]
    assert {(e["user"], e["status"]) for e in audit if e["method"] == "DELETE" and e["path"] == f"/model/{model}"} >= {
        ("anonymous", 401), ("rita", 403), ("anna", 403), ("adam", 409)}


def self_signed_certificate(folder) -> tuple:
    """A key and a self-signed certificate for 127.0.0.1, as a site would make with openssl."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .sign(key, hashes.SHA256()))
    key_file, certificate_file = folder / "server.key", folder / "server.crt"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_file, certificate_file


def test_over_https_users_log_in_and_infer_and_plain_http_is_not_answered(tmp_path):
    """uvicorn's certificate options (README): the client logs in and infers over https, with the certificate checked."""
    users = tmp_path / "users.json"
    add_user(users, "rita", PASSWORDS["rita"], "reader")
    generate_study(tmp_path / "studies", "mri", "tls1", seed=4506)
    key_file, certificate_file = self_signed_certificate(tmp_path)
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": f"http://127.0.0.1:{free_port()}/realms/strokelabel",
           "STROKELABEL_USERS_FILE": str(users)}
    with running_server(tmp_path / "server", tmp_path / "studies", models="ischemic_lesion", env=env, tls=(key_file, certificate_file)) as srv:
        url = f"https://127.0.0.1:{srv.port}"
        token = requests.post(f"{url}/auth/token", data={"username": "rita", "password": PASSWORDS["rita"]}, verify=str(certificate_file),
                              timeout=30).json()["access_token"]
        assert requests.get(f"{url}/info/", headers={"Authorization": f"Bearer {token}"}, verify=str(certificate_file), timeout=30).ok
        client = MONAILabelClient(url, tmpdir=str(tmp_path))  # as 3D Slicer's plugin: https, login, infer
        client.update_auth(client.auth_token("rita", PASSWORDS["rita"]))
        image_id = next(iter(client.datastore()["objects"]))
        _, result = client.infer("ischemic_lesion", image_id, {"method": "baseline"})
        assert result["method"] == "baseline"
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(f"http://127.0.0.1:{srv.port}/info/", timeout=10).raise_for_status()
