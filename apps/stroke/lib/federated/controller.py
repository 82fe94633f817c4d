"""The aggregator: NVFlare's FedAvg, with what a federation of hospitals needs around it.

- Every site answers a round; once ``min_sites`` have, the rest get ``round_timeout_s`` more, then the
  round closes without them (a site that dropped out does not stop the others; NVFlare's dynamic error
  mode then ignores its error). The record names such a site with ``no_answer`` for that round.
- An empty update (a site below its label minimum, or whose data failed) is skipped by FedAvg; its
  reason is kept for the record.
- After the last round the global model is sent home to every site (the ``validate`` task), with the
  federation's record: name, job, round, the sites by pseudonym and each site's last validation Dice
  and study count. Each site decides on it by its own no-regression rule (``lib.federated.site``).

Written here because FedAvg ends with the global model at the aggregator only.
"""

from __future__ import annotations

import time
from typing import Any, Dict

from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.fedavg import FedAvg

from lib.federated.site import pseudonym


class StrokeFedAvg(FedAvg):
    def __init__(self, *args, start_checkpoint: str = "", federation: str = "stroke", min_sites: int | None = None,
                 round_timeout_s: int = 0, send_home: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_checkpoint = start_checkpoint  # read at the aggregator when the job starts (a job config holds no weights)
        self.federation = federation
        self.min_sites = min_sites
        self.round_timeout_s = int(round_timeout_s)
        self.send_home = send_home
        self.site_figures: Dict[str, Dict[str, Any]] = {}
        self.round_log: list = []
        self._global: FLModel | None = None
        self._round_started = 0.0
        self._round_sites: list = []  # the sites sent this round's task

    def send_model(self, task_name="train", data=None, targets=None, min_responses=None, timeout=0, callback=None):
        """Every site answers a round (one that cannot train answers with an empty update and the reason); once
        ``min_sites`` have, the others get ``round_timeout_s`` more, then the round closes without them (a site
        that dropped out). NVFlare's ModelController.send_model has no such wait: it would close the round at
        ``min_sites`` answers and drop a slower site's update."""
        if task_name == self.task_name:
            self._round_started = time.time()
            self._round_sites = [getattr(t, "name", t) for t in (targets or [])]
        self.broadcast_model(task_name=task_name, data=data, targets=targets, min_responses=self.min_sites or 0, timeout=0,
                             wait_time_after_min_received=self.round_timeout_s, blocking=False, callback=callback)

    def _aggregate_one_result(self, result: FLModel) -> bool:
        site = (result.meta or {}).get("client_name") or "unknown"
        alias = pseudonym(self.federation, site)
        figures = {"round": self.current_round}
        if result.params:
            figures.update({k: round(float(v), 4) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))})
        else:
            figures["no_update"] = str((result.meta or {}).get("no_update", "empty update"))[:300]
        self.site_figures[alias] = figures
        return super()._aggregate_one_result(result)

    def save_model(self, model: FLModel) -> None:
        self._global = model
        for site in self._round_sites:  # sent the round's task, never answered: its process died or it stopped answering
            alias = pseudonym(self.federation, site)
            if self.site_figures.get(alias, {}).get("round") != self.current_round:
                self.site_figures[alias] = {"round": self.current_round,
                                            "no_answer": f"no answer within the round (closed {self.round_timeout_s} s after "
                                                         f"{self.min_sites or len(self._round_sites)} sites had answered)"}
        self.round_log.append({"round": self.current_round, "seconds": round(time.time() - self._round_started, 1),
                               "sites": {k: dict(v) for k, v in self.site_figures.items() if v.get("round") == self.current_round}})
        self.info(f"round {self.current_round}: {self.round_log[-1]}")
        super().save_model(model)

    def record(self) -> Dict[str, Any]:
        """What every site's version record says about the global model."""
        last = self.round_log[-1]["round"] if self.round_log else None
        return {"federation": self.federation, "job_id": self.fl_ctx.get_job_id() if self.fl_ctx else None, "round": last,
                "rounds": len(self.round_log),
                "aggregation": (f"FedProx (NVFlare, mu {self.fedprox_mu})" if self.fedprox_mu else "FedAvg (NVFlare)") + ", weighted by studies trained on",
                "sites": self.site_figures, "round_seconds": [r["seconds"] for r in self.round_log]}

    def run(self) -> None:
        if self.start_checkpoint and self.model is None:
            from lib.federated.site import read_state, trainable_state

            self.model = FLModel(params=trainable_state(read_state(self.start_checkpoint)))
            self.info(f"starting model: {self.start_checkpoint}")
        super().run()
        if not self.send_home or self._global is None or self.abort_signal.triggered:
            return
        home = FLModel(params=self._global.params, params_type=self._global.params_type, current_round=self._global.current_round,
                       meta={"federation_record": self.record()})
        self.info(f"sending the global model home: {home.meta['federation_record']}")
        results = self.broadcast_model(task_name="validate", data=home, min_responses=self.min_sites or 0, timeout=0,
                                       wait_time_after_min_received=self.round_timeout_s, blocking=True)
        for result in results:
            site = pseudonym(self.federation, (result.meta or {}).get("client_name") or "unknown")
            self.info(f"global model at {site}: {result.metrics} {(result.meta or {}).get('reason') or (result.meta or {}).get('error')}")
