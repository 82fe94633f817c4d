"""The DICOMweb proxy reaches only the configured PACS, whatever path a client sends; with no PACS it is a 404 saying
so; the access log never prints a proxy query (OHIF searches by patient name and ID)."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from lib import dicom_proxy
from lib.access_control import WithholdProxyQueries

PACS = "http://pacs.example:8042/dicom-web"


class Answer:
    status_code, content, headers = 200, b"[]", {"content-type": "application/dicom+json", "location": "http://elsewhere/"}


@pytest.fixture
def forwarded(monkeypatch):
    """The URLs the proxy asked for (nothing leaves the test), and whether it would follow a redirect."""
    calls = []

    class Session:
        def get(self, url, **kwargs):
            calls.append((url, kwargs.get("allow_redirects", True)))
            return Answer()

        post = get

    monkeypatch.setattr(dicom_proxy.pacs, "authenticated_session", Session)
    return calls


def client_for(studies_url) -> TestClient:
    app = FastAPI()
    app.add_api_route(dicom_proxy.PROXY_PATH, dicom_proxy.dicomweb_proxy(studies_url, {"qido": "", "wado": "", "stow": ""}), methods=["GET", "POST"])
    return TestClient(app)


def test_dicomweb_paths_are_forwarded_to_the_pacs_with_their_query_and_no_redirect_is_followed(forwarded):
    answer = client_for(PACS).get("/proxy/dicom/qido/studies/1.2.840.113619.2.55/series?PatientID=PAT-1&includefield=all")
    assert answer.status_code == 200 and "location" not in answer.headers
    assert forwarded == [(f"{PACS}/studies/1.2.840.113619.2.55/series?PatientID=PAT-1&includefield=all", False)]
    client_for(PACS).get("/proxy/dicom/wado/studies/1.2/series/3.4/instances/5.6/frames/1,2,3")
    assert forwarded[-1][0] == f"{PACS}/studies/1.2/series/3.4/instances/5.6/frames/1,2,3"


@pytest.mark.parametrize("path", ["http://127.0.0.1:22/", "wado/%2e%2e/%2e%2e/tools/now", "/127.0.0.1:22/studies", "stow/@evil.example/studies",
                                  "qido/studies%2F..%2F..%2Fsystem", "wado/studies/1.2%00/series", "qido/studies/1.2;x=1", "qido/" + "a" * 200])
def test_a_path_that_is_not_dicomweb_is_a_400_naming_it_and_nothing_is_forwarded(forwarded, path):
    answer = client_for(PACS).get(f"/proxy/dicom/{path}")
    assert answer.status_code == 400 and "not a DICOMweb path" in answer.json()["detail"], answer.text
    assert forwarded == []


@pytest.mark.parametrize("path", ["qido/../../patients", "qido/studies/..", "qido/.", "..", "wado//studies"])
def test_dot_segments_and_empty_ones_are_refused_as_sent(path):
    """(A test client normalises ``..`` away before sending; a raw client does not: tests/e2e/test_pacs.py.)"""
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as refused:
        dicom_proxy.checked_path(path)
    assert refused.value.status_code == 400 and "not a DICOMweb path" in refused.value.detail


def test_with_no_pacs_configured_the_proxy_is_a_404_saying_so(forwarded):
    for path in ("http://127.0.0.1:22/", "qido/studies"):
        answer = client_for(None).get(f"/proxy/dicom/{path}")
        assert answer.status_code == 404 and "no PACS is configured" in answer.json()["detail"]
    assert forwarded == []


def test_the_access_log_withholds_proxy_queries_and_keeps_other_paths():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/proxy/dicom/qido/studies?PatientName=Doe^Jane", "1.1", 200), None)
    assert WithholdProxyQueries().filter(record) and "Doe" not in record.getMessage() and "/proxy/dicom/qido/studies" in record.getMessage()
    other = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                              ("127.0.0.1:5", "POST", "/infer/core_penumbra?image=sub-1", "1.1", 200), None)
    assert WithholdProxyQueries().filter(other) and "image=sub-1" in other.getMessage()
