"""The PACS datastore when the PACS is not there: the server still starts, says why, and lists nothing."""

from __future__ import annotations

import logging
import socket

from lib.dicomweb_datastore import StrokeDicomwebDatastore


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_unreachable_pacs_leaves_an_empty_datastore_and_a_clear_log_line(tmp_path, caplog):
    url = f"http://127.0.0.1:{closed_port()}/dicom-web"
    with caplog.at_level(logging.ERROR):
        store = StrokeDicomwebDatastore(url, str(tmp_path / "cache"))
    assert store.list_images() == []
    assert any("did not answer its study list" in r.getMessage() and url in r.getMessage() for r in caplog.records)
    assert store.get_image_uri("1.2.3") == ""
