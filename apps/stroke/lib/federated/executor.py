"""The site's NVFlare executor: NVFlare's Client API executor pinned to the client script installed with
the app (``lib/federated/client.py``).

NVFlare's own ``ClientAPIExecutor`` runs whatever script path a job names, so it is not on NVFlare's
default component allow-list, and a site should not add it. This one takes from the job only the
task and the training options; the code it runs is the app's, installed at the site. A site's
``local/resources.json`` allow-lists ``lib.federated.`` (``job.allow_app_components``) and nothing else.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from nvflare.app_common.executors.client_api_executor import ClientAPIExecutor
from nvflare.client.config import ExchangeFormat, TransferType

CLIENT_SCRIPT = Path(__file__).resolve().parent / "client.py"


class StrokeSiteExecutor(ClientAPIExecutor):
    """``task``: the federated task; ``min_labels``: fewest final labels to send an update; ``train``: the
    trainer's request options (a dict: NVFlare reads a braced string in a job config as an expression); ``model_dir``/``studies``: the site's app and data (simulator only: a
    real site sets them in its own environment, ``STROKELABEL_FL_MODEL_DIR`` / ``STROKELABEL_FL_STUDIES``);
    ``server_url``: the site's running server the global model is offered to (else decided in process)."""

    def __init__(self, task: str, min_labels: int = 3, train: dict | None = None, model_dir: str = "", studies: str = "",
                 server_url: str = ""):
        self.task, self.min_labels, self.train = task, int(min_labels), dict(train or {})
        self.model_dir, self.studies, self.server_url = model_dir, studies, server_url
        args = ["--task", task, "--min-labels", str(int(min_labels)), "--train", ",".join(f"{k}={v}" for k, v in self.train.items())]
        if any(c in str(v) + k for k, v in self.train.items() for c in ",= \t\"'"):
            raise ValueError(f"training options must be plain key=value words: {self.train}")
        for flag, value in (("--model-dir", model_dir), ("--studies", studies), ("--server-url", server_url)):
            if value:
                args += [flag, value]
        super().__init__(execution_mode="in_process", task_script_path=str(CLIENT_SCRIPT), task_script_args=shlex.join(args),
                         params_exchange_format=ExchangeFormat.NUMPY, server_expected_format=ExchangeFormat.NUMPY,
                         params_transfer_type=TransferType.DIFF)
