"""OHIF 3.13 at ``/ohif3/``: the viewer that corrects a segmentation and stores it in the PACS as DICOM-SEG.

The one web viewer: the prebuilt ``@ohif/app`` from npm (``scripts/setup_viewer.sh`` unpacks it into
``viewer/``) with StrokeLabel's extension and mode (``ohif3_plugin/``), which run a task, save the label
and retrain; monailabel's bundled OHIF 3.10 beta (``/ohif/``) is retired (main.py). The npm build expects to live at ``/``: its
``index.html`` and the webpack runtime of some bundles carry ``/`` as public path, and a stylesheet
an absolute font URL. These are rewritten for ``/ohif3/`` as they are served (no rebuild), and
``app-config.js`` is the app's own: one DICOMweb data source, the server's ``/proxy/dicom/...`` (same
origin, PACS credentials stay on the server), storing SEGs as classic binary SEG in explicit VR
little endian (OHIF 3.13's default, the 2024 Label Map SEG with RLE, is newer than Debian's Orthanc
1.10 and than the app's SEG reader).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import FileResponse, Response

from monailabel.utils.others.generic import get_mime_type

OHIF3_VERSION = "3.13.2"  # keep in step with scripts/setup_viewer.sh
ROUTE_PREFIX = "/ohif3"
SETUP_COMMAND = "bash scripts/setup_viewer.sh"
# StrokeLabel's extension and mode (ES modules in lib/ohif3_plugin/), served at /ohif3/strokelabel/<file>. OHIF's
# loader imports an extension or mode entry it does not know by name with the browser's import(): no rebuild.
PLUGIN_DIR = Path(__file__).parent / "ohif3_plugin"
PLUGIN_ROUTE = "strokelabel"
PLUGIN_EXTENSION = "extension.mjs"
PLUGIN_MODE = "mode.mjs"
WEBPACK_PUBLIC_PATH = b'__webpack_require__.p = "/"'
REWRITTEN_SUFFIXES = (".js", ".css", ".html")


def default_viewer_dir() -> Path:
    """``STROKELABEL_OHIF3_DIR``, else ``viewer/ohif-<version>/dist`` in the checkout the strokelabel package comes from."""
    configured = os.environ.get("STROKELABEL_OHIF3_DIR")
    if configured:
        return Path(configured)
    import strokelabel

    return Path(strokelabel.__file__).resolve().parents[1] / "viewer" / f"ohif-{OHIF3_VERSION}" / "dist"


def app_config(prefix: str = ROUTE_PREFIX) -> str:
    """OHIF's ``window.config``: the study list and the modes of the build, reading and storing through the server's proxy."""
    data_source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "strokelabel",
        "configuration": {
            "friendlyName": "StrokeLabel PACS (through the StrokeLabel server)",
            "name": "strokelabel",
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "supportsStow": True,  # "Export/Store" offers this data source
            "supportsReject": False,  # the proxy forwards no DELETE/reject: nothing is removed from the PACS
            "staticWado": False,
            "singlepart": "bulkdata,video,pdf",
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "segmentation": {"store": {"defaultMode": "bitmap", "transferSyntaxUID": "1.2.840.10008.1.2.1"}},
        },
    }
    config = {
        "routerBasename": prefix,
        "showStudyList": True,
        "extensions": [f"{prefix}/{PLUGIN_ROUTE}/{PLUGIN_EXTENSION}"],
        "modes": [f"{prefix}/{PLUGIN_ROUTE}/{PLUGIN_MODE}"],
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "strokelabel",
        "dataSources": [data_source],
    }
    # The proxy's roots are absolute URLs of the page's own origin, whatever host name the user typed.
    return ("/** Written by the StrokeLabel server (apps/stroke/lib/ohif3.py), not OHIF's default. */\n"
            f"window.config = {json.dumps(config, indent=1)};\n"
            "(function (source) {\n"
            "  const proxy = window.location.origin + '/proxy/dicom';\n"
            "  Object.assign(source, {qidoRoot: proxy + '/qido', wadoRoot: proxy + '/wado', wadoUriRoot: proxy + '/wado'});\n"
            "})(window.config.dataSources[0].configuration);\n")


def plugin_response(name: str):
    """One of the StrokeLabel extension's modules (a fixed list: nothing else under the plugin folder is served)."""
    if name not in (PLUGIN_EXTENSION, PLUGIN_MODE):
        raise HTTPException(status_code=404, detail=f"no StrokeLabel viewer module {name!r}")
    return FileResponse(str(PLUGIN_DIR / name), media_type="application/javascript", headers={"Cache-Control": "no-cache"})


def rewrite_for_prefix(name: str, content: bytes, prefix: str = ROUTE_PREFIX) -> bytes:
    """A file of the build as served under ``prefix`` instead of ``/``."""
    slash = prefix.rstrip("/").encode() + b"/"
    if name.endswith(".html"):
        content = content.replace(b'window.PUBLIC_URL="/"', b'window.PUBLIC_URL="' + slash + b'"')
        return content.replace(b'href="/', b'href="' + slash).replace(b'src="/', b'src="' + slash)
    if name.endswith(".css"):
        return content.replace(b"url(/", b"url(" + slash)
    if name.endswith(".js"):  # chunks, workers and wasm are loaded from the webpack runtime's public path
        return content.replace(WEBPACK_PUBLIC_PATH, b'__webpack_require__.p = "' + slash + b'"')
    return content


class Ohif3Files:
    """Serves the unpacked build; rewritten files are computed once and kept (a few bundles, ~30 MB)."""

    def __init__(self, root: Path, prefix: str = ROUTE_PREFIX):
        self.root = Path(root)
        self.prefix = prefix
        self._rewritten: dict[str, bytes | None] = {}  # None: served unchanged from disk
        self._lock = threading.Lock()

    def installed(self) -> bool:
        return (self.root / "index.html").is_file()

    def response(self, path: str):
        if not self.installed():
            raise HTTPException(status_code=404, detail=f"OHIF {OHIF3_VERSION} is not installed in {self.root}: run `{SETUP_COMMAND}`")
        if path == "app-config.js":
            return Response(app_config(self.prefix), media_type="application/javascript", headers={"Cache-Control": "no-cache"})
        if path.startswith(PLUGIN_ROUTE + "/"):
            return plugin_response(path[len(PLUGIN_ROUTE) + 1:])
        file = (self.root / path).resolve() if path else self.root / "index.html"
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            file = self.root / "index.html"  # a route of the single-page app (e.g. /ohif3/segmentation?StudyInstanceUIDs=...)
        name = file.name
        media_type = get_mime_type(str(file)) if not name.endswith(".js") else "application/javascript"
        if name.endswith(REWRITTEN_SUFFIXES):
            content = self._rewritten_content(file)
            if content is not None:
                return Response(content, media_type="text/html" if name.endswith(".html") else media_type)
        return FileResponse(str(file), media_type=media_type)

    def _rewritten_content(self, file: Path) -> bytes | None:
        key = str(file)
        with self._lock:
            if key not in self._rewritten:
                original = file.read_bytes()
                rewritten = rewrite_for_prefix(file.name, original, self.prefix)
                self._rewritten[key] = rewritten if rewritten != original else None
            return self._rewritten[key]
