"""The DICOMweb proxy OHIF talks to (``/proxy/dicom/...``), with the query string kept.

monailabel 0.8.5's own proxy forwards the path but drops the query string, so OHIF's study list
(``/proxy/dicom/qido/studies?PatientID=...``) shows every patient's studies under any patient. This
route is registered in front of it (apps/stroke/main.py) and forwards path, query and body, with
the PACS credentials from the environment (strokelabel.pacs.client_for), never the client's.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from strokelabel import pacs

PROXY_PATH = "/proxy/dicom/{path:path}"
# Headers of the PACS' answer that describe the body as it is passed on (the rest is hop-by-hop or recomputed).
PASSED_HEADERS = ("content-type", "content-disposition", "etag", "last-modified")


def dicomweb_proxy(studies_url: str, prefixes: dict[str, str]):
    """A route handler forwarding ``/proxy/dicom/[qido|wado|stow/]<path>?<query>`` to the PACS at ``studies_url``."""
    async def proxy(request: Request, path: str):
        op, _, rest = path.partition("/")
        if op not in ("qido", "wado", "stow"):
            op, rest = "", path
        if op == "qido" and rest.endswith("metadata"):
            op = "wado"  # some OHIF versions ask QIDO for metadata
        prefix = (prefixes.get(op) or "").strip("/")
        url = "/".join(p for p in (studies_url.rstrip("/"), prefix, rest) if p)
        if request.url.query:
            url += "?" + request.url.query
        auth_session = pacs.authenticated_session()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type")}
        if request.method == "POST":
            answer = auth_session.post(url, data=await request.body(), headers=headers, timeout=300)
        else:
            answer = auth_session.get(url, headers=headers, timeout=300)
        passed = {k: v for k, v in answer.headers.items() if k.lower() in PASSED_HEADERS}
        return Response(content=answer.content, status_code=answer.status_code, headers=passed)

    return proxy
