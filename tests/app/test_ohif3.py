"""OHIF 3.13 served at /ohif3/ from the npm build, without a rebuild (lib/ohif3.py)."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from lib.ohif3 import SETUP_COMMAND, Ohif3Files, app_config, rewrite_for_prefix

INDEX = (b'<head><script>window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">'
         b'<script src="/app-config.js"></script><script defer src="/app.bundle.1234.js"></script></head>')
BUNDLE = b'(() => { __webpack_require__.p = "/"; })(); fetch("/proxy/dicom/qido")'


@pytest.fixture
def dist(tmp_path):
    (tmp_path / "index.html").write_bytes(INDEX)
    (tmp_path / "app.bundle.1234.js").write_bytes(BUNDLE)
    (tmp_path / "plain.js").write_bytes(b"console.log('no public path here')")
    (tmp_path / "app.bundle.css").write_bytes(b"@font-face{src:url(/a1.woff2)}")
    (tmp_path / "app-config.js").write_bytes(b"window.config = {dataSources: ['the public demo server']}")
    return tmp_path


def body(response) -> bytes:
    return response.body if hasattr(response, "body") else open(response.path, "rb").read()


def test_index_html_is_served_for_the_prefix(dist):
    page = body(Ohif3Files(dist).response(""))
    assert b'window.PUBLIC_URL="/ohif3/"' in page
    assert b'href="/ohif3/manifest.json"' in page and b'src="/ohif3/app.bundle.1234.js"' in page and b'src="/ohif3/app-config.js"' in page
    assert b'"/app' not in page


def test_a_route_of_the_single_page_app_gets_index_html_and_no_file_outside_the_build_is_served(dist, tmp_path_factory):
    secret = tmp_path_factory.mktemp("beyond_the_build") / "secret.txt"
    secret.write_text("not for the browser")
    files = Ohif3Files(dist)
    assert b'PUBLIC_URL="/ohif3/"' in body(files.response("segmentation"))
    assert b'PUBLIC_URL="/ohif3/"' in body(files.response(f"../{secret.parent.name}/secret.txt"))


def test_bundles_load_their_chunks_and_fonts_from_the_prefix_and_other_files_are_untouched(dist):
    files = Ohif3Files(dist)
    assert b'__webpack_require__.p = "/ohif3/"' in body(files.response("app.bundle.1234.js"))
    assert b'fetch("/proxy/dicom/qido")' in body(files.response("app.bundle.1234.js"))  # only the public path changes
    assert body(files.response("plain.js")) == b"console.log('no public path here')"
    assert body(files.response("app.bundle.css")) == b"@font-face{src:url(/ohif3/a1.woff2)}"


def test_app_config_is_the_servers_own_reading_and_storing_through_its_proxy_as_binary_seg(dist):
    config = body(Ohif3Files(dist).response("app-config.js")).decode()
    assert "the public demo server" not in config
    assert "'/proxy/dicom'" in config and "wadoRoot: proxy + '/wado'" in config
    assert '"routerBasename": "/ohif3"' in config and '"supportsStow": true' in config
    assert '"defaultMode": "bitmap"' in config and '"transferSyntaxUID": "1.2.840.10008.1.2.1"' in config
    assert config == app_config()


def test_without_the_viewer_every_path_is_a_404_naming_the_setup_command(tmp_path):
    for path in ("", "app-config.js", "segmentation"):
        with pytest.raises(HTTPException) as error:
            Ohif3Files(tmp_path / "missing").response(path)
        assert error.value.status_code == 404 and SETUP_COMMAND in error.value.detail


def test_rewrite_leaves_other_kinds_of_file_alone():
    assert rewrite_for_prefix("logo.svg", b'<svg href="/x"/>') == b'<svg href="/x"/>'


def test_app_config_loads_strokelabels_extension_and_mode_which_are_served_beside_it_and_nothing_else_of_their_folder(dist):
    config = body(Ohif3Files(dist).response("app-config.js")).decode()
    assert '"extensions": [\n  "/ohif3/strokelabel/extension.mjs"\n ]' in config and '"/ohif3/strokelabel/mode.mjs"' in config
    files = Ohif3Files(dist)
    for name in ("extension.mjs", "mode.mjs"):
        response = files.response(f"strokelabel/{name}")
        assert response.media_type == "application/javascript" and body(response).startswith(b"// StrokeLabel's")
    for name in ("../ohif3.py", "other.mjs", ""):
        with pytest.raises(HTTPException) as error:
            files.response(f"strokelabel/{name}")
        assert error.value.status_code == 404


@pytest.mark.parametrize("on_pacs", [False, True])
def test_the_bundled_ohif_3_10_is_no_longer_served_and_its_bookmarks_go_to_ohif3_on_a_pacs(tmp_path, on_pacs):
    """One web viewer: monailabel's /ohif/ router and its /static files (the 3.10 beta) are taken out of the server."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles
    from fastapi.testclient import TestClient
    from monailabel.endpoints import ohif as bundled_ohif

    from main import StrokeApp

    (tmp_path / "ohif").mkdir()
    (tmp_path / "ohif" / "index.html").write_text("<html>OHIF 3.10</html>")
    app = FastAPI()  # as monailabel.app builds it: the static mount, then the bundled viewer's router
    app.mount("/static", StaticFiles(directory=str(tmp_path)), name="static")
    app.include_router(bundled_ohif.router)
    client = TestClient(app)
    assert client.get("/static/ohif/index.html").status_code == 200

    StrokeApp._retire_bundled_ohif(app, on_pacs)
    assert client.get("/static/ohif/index.html").status_code == 404
    answer = client.get("/ohif/viewer", params={"StudyInstanceUIDs": "1.2.3"}, follow_redirects=False)
    if on_pacs:
        assert answer.status_code == 308 and answer.headers["location"] == "/ohif3/stroke?StudyInstanceUIDs=1.2.3"
        assert client.get("/ohif/", follow_redirects=False).headers["location"] == "/ohif3/"
    else:
        assert answer.status_code == 404 and "retired" in answer.json()["detail"] and "3D Slicer" in answer.json()["detail"]
