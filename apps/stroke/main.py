"""StrokeLabel: the MONAI Label app for acute ischemic stroke imaging.

Wires what the task configs in ``lib/configs`` provide (infer tasks, trainers, strategies,
scoring methods) and the stroke datastore. Adding a task means adding a config, not editing
this file. ``--conf models core_penumbra,clot_region`` serves a subset (default: all).
"""

import importlib
import logging
import os
import sys
from typing import Dict

from fastapi import Depends, HTTPException
from fastapi.responses import FileResponse

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.class_utils import get_class_names

import lib.configs
from lib.datastore import StrokeDatastore
from lib.errors import http_errors
from lib.infers.stroke_infer import SUMMARY_ROUTE
from lib.model_routes import add_model_routes, lifecycle_models, versions_in_use
from lib.model_versions import remove_unfinished_copies
from strokelabel import __version__, warm_start
from strokelabel.derived import summary_picture_path
from strokelabel.lifeline import busy_marker, exit_without_final_collection, foreground_call, mark_as_server, tie_to_server
from strokelabel.study import describe_study

logger = logging.getLogger(__name__)


def discover_configs() -> Dict[str, str]:
    """Task name (the config's module name) -> TaskConfig class path, e.g. core_penumbra."""
    return {c.split(".")[-2].lower(): c for c in sorted(get_class_names(lib.configs, "StrokeTaskConfig"))}


def build_task_configs(model_dir: str, conf: Dict[str, str], models: str = "all") -> Dict[str, TaskConfig]:
    """The task configs to serve, initialised; ``models`` is ``all`` or a comma-separated list."""
    configs = discover_configs()
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(configs) - {"all"})
    if unknown:
        raise ValueError(f"--conf models: unknown task(s) {unknown}; available: {sorted(configs)}")
    tasks: Dict[str, TaskConfig] = {}
    for name, class_path in configs.items():
        if "all" in wanted or name in wanted:
            module_name, class_name = class_path.rsplit(".", 1)
            config = getattr(importlib.import_module(module_name), class_name)()
            config.init(name, model_dir, conf, None)
            tasks[name] = config
    return tasks


def store_ai_seg(datastore) -> bool:
    """Whether every AI answer on a study of ``datastore`` is stored as an AUTOMATIC SEG: in PACS mode unless
    ``STROKELABEL_PACS_STORE_AI_SEG=0`` (a request's own ``save_label`` always wins)."""
    from lib.dicomweb_datastore import StrokeDicomwebDatastore

    return isinstance(datastore, StrokeDicomwebDatastore) and os.environ.get("STROKELABEL_PACS_STORE_AI_SEG", "1") != "0"


class StrokeApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.model_dir = os.path.join(app_dir, "model")
        exit_without_final_collection()  # the server and each training/scoring child end seconds sooner
        if tie_to_server() is None:  # in MONAI Label's training/scoring child: die with the server, never outlive it
            mark_as_server()  # its children compare their parent with this pid (one started as it died is an orphan)
            busy_marker().unlink(missing_ok=True)  # the server: where it marks a clinician's call for its children
            remove_unfinished_copies(self.model_dir)  # a model switch a kill -9 cut short (never the model in use)
            if "monailabel.app" in sys.modules:  # the server: its training and scoring runs start warm (strokelabel/warm_start.py)
                warm_start.install(app_dir)
        self.models = build_task_configs(self.model_dir, conf, conf.get("models", "all"))
        logger.info(f"+++ Using tasks: {list(self.models)}")

        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="StrokeLabel",
            description="Acute ischemic stroke: core/penumbra on CT perfusion, ischemic lesion on CTP or MRI, "
            "clot location on multiphase CTA. Research tool, not a medical device.",
            version=__version__,
        )
        self._add_routes()

    def _add_routes(self) -> None:
        """The stroke app's own endpoints beside MONAI Label's: the summary picture of a result
        (``result["summary_url"]``), only ever a file the app wrote for a datastore study; the model
        lifecycle (lib/model_routes.py); the DICOMweb proxy (lib/dicom_proxy.py)."""
        server = sys.modules.get("monailabel.app")
        if server is None or any(getattr(r, "path", None) == SUMMARY_ROUTE for r in server.app.routes):
            return  # not inside the server (scripts, tests), or already added

        def summary(image: str, task: str):
            return FileResponse(self.summary_picture(image, task), media_type="image/png")

        server.app.add_api_route(SUMMARY_ROUTE, summary, methods=["GET"], tags=["stroke"], summary="The one-page summary picture of a result")
        from lib.access_control import install

        install(server.app, self.app_dir)  # the built-in realm (if on), the audit log, the upload limit
        self._add_ohif3_routes(server.app)
        add_model_routes(server.app, self)
        from monailabel.config import settings
        from monailabel.endpoints.user.auth import RBAC

        from lib.dicom_proxy import PROXY_PATH, dicomweb_proxy

        prefixes = {"qido": settings.MONAI_LABEL_QIDO_PREFIX, "wado": settings.MONAI_LABEL_WADO_PREFIX, "stow": settings.MONAI_LABEL_STOW_PREFIX}
        proxy = dicomweb_proxy(self.studies if self.on_pacs else None, prefixes)
        # Reading through the proxy is for any user; storing (STOW-RS: a label saved from the viewer) is an annotator's,
        # as the label API is: a reader can run a task but not save.
        server.app.add_api_route(PROXY_PATH, proxy, methods=["GET"], include_in_schema=False, dependencies=[Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))])
        server.app.add_api_route(PROXY_PATH, proxy, methods=["POST"], include_in_schema=False,
                                 dependencies=[Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))])
        # In front of monailabel's own proxy, which drops the query string and, with no PACS configured, answers 500
        # (lib/dicom_proxy.py).
        routes = server.app.router.routes
        routes[0:0] = [routes.pop(-2), routes.pop()]  # the GET and the POST route just added

    def _add_ohif3_routes(self, app) -> None:
        """OHIF 3.13 at /ohif3/ (lib/ohif3.py): the viewer that stores a corrected segmentation in the PACS."""
        from fastapi.responses import RedirectResponse
        from monailabel.config import settings
        from monailabel.endpoints.user.auth import RBAC

        from lib.ohif3 import ROUTE_PREFIX, Ohif3Files, default_viewer_dir

        files = Ohif3Files(default_viewer_dir())
        on_pacs = self.on_pacs

        def viewer(path: str = ""):
            if not on_pacs:
                raise HTTPException(status_code=404, detail="OHIF 3.13 (/ohif3/) reads and stores studies in a PACS: start the server with "
                                                            "--studies http(s)://<pacs>/dicom-web (a folder of studies opens in 3D Slicer)")
            return files.response(path)

        user = [Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))]
        app.add_api_route(ROUTE_PREFIX, lambda: RedirectResponse(ROUTE_PREFIX + "/"), methods=["GET"], include_in_schema=False)
        app.add_api_route(ROUTE_PREFIX + "/{path:path}", viewer, methods=["GET"], include_in_schema=False, dependencies=user)
        self._retire_bundled_ohif(app, on_pacs)

    @staticmethod
    def _retire_bundled_ohif(app, on_pacs: bool) -> None:
        """One web viewer: monailabel's bundled OHIF 3.10 beta (its MONAI Label panel runs a task but cannot save) is no
        longer served, neither at /ohif/ nor as the files of its /static mount (which holds only it and the favicon,
        served at /favicon.ico as well). A bookmark of /ohif/ is sent to /ohif3/ on a PACS (the study it named, in the
        StrokeLabel mode); in folder mode it gets a 404 saying where the viewers are."""
        from urllib.parse import urlencode

        from fastapi import Request
        from fastapi.responses import RedirectResponse
        from starlette.routing import Mount

        from lib.ohif3 import ROUTE_PREFIX

        from monailabel.endpoints import ohif as bundled_ohif

        def bundled(route) -> bool:  # FastAPI 0.165 keeps an included router as one entry (``original_router``)
            return (getattr(route, "original_router", None) is bundled_ohif.router or str(getattr(route, "path", "")).startswith("/ohif/")
                    or (isinstance(route, Mount) and route.path == "/static"))

        app.router.routes[:] = [r for r in app.router.routes if not bundled(r)]

        def retired(request: Request, path: str = ""):
            if not on_pacs:
                raise HTTPException(status_code=404, detail="the bundled OHIF 3.10 (/ohif/) is retired: the web viewer is OHIF 3.13 at /ohif3/ on a "
                                                            "PACS (--studies http(s)://<pacs>/dicom-web); a folder of studies opens in 3D Slicer")
            study = request.query_params.get("StudyInstanceUIDs")
            target = f"{ROUTE_PREFIX}/stroke?{urlencode({'StudyInstanceUIDs': study})}" if study else ROUTE_PREFIX + "/"
            return RedirectResponse(target, status_code=308)

        app.add_api_route("/ohif", retired, methods=["GET"], include_in_schema=False)
        app.add_api_route("/ohif/{path:path}", retired, methods=["GET"], include_in_schema=False)

    @property
    def on_pacs(self) -> bool:
        """Whether the server's studies are a DICOMweb PACS (a URL), not a folder."""
        return str(self.studies).startswith(("http://", "https://"))

    def init_datastore(self) -> Datastore:
        if self.on_pacs:
            from lib.dicomweb_datastore import StrokeDicomwebDatastore

            logger.info("Init stroke datastore for the PACS at %s", self.studies.split("@")[-1])
            return StrokeDicomwebDatastore(self.studies, self.conf.get("pacs_cache"))
        logger.info(f"Init stroke datastore for: {self.studies}")
        return StrokeDatastore(self.studies, auto_reload=False, read_only=False)

    def _collect(self, method: str) -> Dict:
        tasks = {}
        for name, config in self.models.items():
            provided = getattr(config, method)()
            if provided is None:
                continue
            tasks.update(provided if isinstance(provided, dict) else {name: provided})
        return tasks

    def init_infers(self) -> Dict[str, InferTask]:
        return self._collect("infer")

    def init_trainers(self) -> Dict[str, TrainTask]:
        # Also which models each task serves (ischemic_lesion: one per route), for /info and the model routes.
        trainers, self.task_models = {}, {}
        for name, config in self.models.items():
            provided = config.trainer()
            provided = {} if provided is None else provided if isinstance(provided, dict) else {name: provided}
            trainers.update(provided)
            self.task_models[name] = lifecycle_models(provided)
        return trainers

    def info(self):
        """MONAI Label's info, with the version in use of each task's models (``models.<task>.versions_in_use``)."""
        meta = super().info()
        for task, entry in meta["models"].items():
            entry["versions_in_use"] = versions_in_use(self.model_dir, self.task_models.get(task, []))
        return meta

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First(), **self._collect("strategy")}

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        return self._collect("scoring_method")

    def async_scoring(self, method, params=None):
        """MONAI Label's automatic scoring (after start-up, each training and each next sample), started only for the
        scoring methods with studies to score (``StrokeUncertaintyScoring.pending``): each run is a process that
        loads the app, 13-15 CPU-s before it looks at a study, and most runs find every score current. An explicit
        ``POST /scoring/<method>`` always runs."""
        methods = [method] if method else list(self._scoring_methods)
        datastore = self.datastore()
        reload = getattr(datastore, "_init_from_datastore_file", None)  # LocalDatastore: re-read its file if a scoring run wrote it
        if reload is not None:
            reload()
        needed = []
        for name in methods:
            scoring = self._scoring_methods.get(name)
            force = bool(((params or {}).get(name) or {}).get("force"))
            try:
                idle = scoring is not None and hasattr(scoring, "pending") and scoring.pending(datastore, force) == 0
            except Exception as e:  # never keep a round from running on a question about it
                logger.warning(f"scoring {name}: could not tell whether any study needs a score ({e}); the round runs")
                idle = False
            if idle:
                logger.info(f"scoring {name}: every study's score is of the model in use, no run started")
            else:
                needed.append(name)
        if not needed:
            return {} if not method else {"status": "SKIPPED", "reason": "nothing to score"}
        if method:
            return super().async_scoring(method, params)
        result = {}
        for name in needed:
            result[name] = super().async_scoring(name, params)
        return result

    def infer(self, request, datastore=None):
        # Only datastore studies are read: an id the datastore does not know (or a path on this server) is a 404 naming it.
        image = request.get("image")
        if not isinstance(image, str) or not (datastore or self.datastore()).get_image_uri(image):
            raise HTTPException(status_code=404, detail=f"no study {image!r} in the datastore")
        if "save_label" not in request and store_ai_seg(datastore or self.datastore()):
            # PACS mode: the answer is kept as the study's ``original`` label, which the PACS datastore stores as an
            # AUTOMATIC SEG, which the StrokeLabel panel in OHIF (lib/ohif3_plugin) loads as an editable segmentation.
            request = {**request, "save_label": True}
        with http_errors(), foreground_call():  # background scoring waits while a clinician's infer runs
            # The datastore id, for the result's summary URL (MONAI Label replaces ``image`` by the file's path).
            answer = super().infer({**request, "image_id": request.get("image")}, datastore)
        if str(request.get("save_label", False)).lower() in ("true", "1"):  # this answer was stored, not an earlier one
            self._name_the_ai_seg(answer, image, datastore or self.datastore())
        return answer

    @staticmethod
    def _name_the_ai_seg(answer: dict, image: str, datastore) -> None:
        """In PACS mode, the result names the AI SEG the answer was stored as (``ai_seg``: series and instance UID),
        so a viewer loads that series from the PACS instead of converting the label."""
        seg = datastore.ai_seg(image) if hasattr(datastore, "ai_seg") and answer.get("label") else None
        if seg and isinstance(answer.get("params"), dict):
            answer["params"]["ai_seg"] = seg

    def summary_picture(self, image: str, task: str) -> str:
        """The summary picture of ``task``'s latest answer on datastore study ``image`` (a path on this server)."""
        if task not in self._infers:
            raise HTTPException(status_code=404, detail=f"no task {task!r}; tasks: {sorted(self._infers)}")
        if image not in self.datastore().list_images():
            raise HTTPException(status_code=404, detail=f"no study {image!r} in the datastore")
        reference = self.datastore().get_image_uri(image)
        with http_errors():
            study_id = describe_study(reference).study_id
        path = summary_picture_path(reference, study_id, task)
        if not path.exists():
            raise HTTPException(status_code=404, detail=f"no summary picture of {task} on {image} yet: run the task on it first")
        return str(path)

    def train(self, request):
        with http_errors():
            return super().train(request)
