"""The DICOMweb proxy OHIF talks to (``/proxy/dicom/...``), with the query string kept.

monailabel 0.8.5's own proxy forwards the path but drops the query string, so OHIF's study list
(``/proxy/dicom/qido/studies?PatientID=...``) shows every patient's studies under any patient. This
route is registered in front of it (apps/stroke/main.py) and forwards path, query and body, with
the PACS credentials from the environment (strokelabel.pacs.client_for), never the client's.

It only ever reaches the configured PACS: the path a client sends is checked segment by segment
against what DICOMweb paths are made of (UIDs, keywords, frame lists), so no ``..``, ``http://...``,
``//host`` or encoded form of them can choose another host or leave the DICOMweb root, the final URL's
host is checked against the PACS', and a redirect from the PACS is passed back, never followed. With
no PACS configured (folder mode) it answers 404 saying so, where monailabel's own proxy answered 500.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import Response

from strokelabel import pacs

PROXY_PATH = "/proxy/dicom/{path:path}"
# Headers of the PACS' answer that describe the body as it is passed on (the rest is hop-by-hop or recomputed).
PASSED_HEADERS = ("content-type", "content-disposition", "etag", "last-modified")
# A DICOMweb path segment: a resource keyword (studies, series, metadata, rendered, bulkdata, ...), a UID,
# a frame list (1,2,3) or a bulk data id; never "." or "..", never a scheme, host, port or escape.
SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._,-]{0,127}$")


def checked_path(path: str) -> str:
    """``path`` when every segment is a DICOMweb one, else 400 naming it (the path never chooses the host)."""
    segments = path.split("/")
    if path.endswith("/"):
        segments = segments[:-1]  # a trailing slash (some clients add one) is harmless
    bad = [s for s in segments if not SEGMENT.match(s) or set(s) == {"."}]
    if not segments or bad:
        raise HTTPException(status_code=400, detail=f"/proxy/dicom/{path[:200]}: not a DICOMweb path (segment {bad[0][:80] if bad else ''!r}); "
                                                    "the proxy forwards qido/, wado/ or stow/ paths of the configured PACS only")
    return "/".join(segments)


def dicomweb_proxy(studies_url: str, prefixes: dict[str, str]):
    """A route handler forwarding ``/proxy/dicom/[qido|wado|stow/]<path>?<query>`` to the PACS at ``studies_url``
    (None: no PACS configured, every call a 404 saying so)."""
    async def proxy(request: Request, path: str):
        if not studies_url:
            raise HTTPException(status_code=404, detail="no PACS is configured: the DICOMweb proxy (/proxy/dicom/) serves only a server "
                                                        "started with --studies http(s)://<pacs>/dicom-web")
        path = checked_path(path)
        op, _, rest = path.partition("/")
        if op not in ("qido", "wado", "stow"):
            op, rest = "", path
        if op == "qido" and rest.endswith("metadata"):
            op = "wado"  # some OHIF versions ask QIDO for metadata
        prefix = (prefixes.get(op) or "").strip("/")
        url = "/".join(p for p in (studies_url.rstrip("/"), prefix, rest) if p)
        if request.url.query:
            url += "?" + request.url.query
        if urlsplit(url).netloc != urlsplit(studies_url).netloc:  # belt and braces: the PACS' host, always
            raise HTTPException(status_code=400, detail="the proxy forwards to the configured PACS only")
        auth_session = pacs.authenticated_session()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type")}
        if request.method == "POST":
            answer = auth_session.post(url, data=await request.body(), headers=headers, timeout=300, allow_redirects=False)
        else:
            answer = auth_session.get(url, headers=headers, timeout=300, allow_redirects=False)
        passed = {k: v for k, v in answer.headers.items() if k.lower() in PASSED_HEADERS}
        return Response(content=answer.content, status_code=answer.status_code, headers=passed)

    return proxy
