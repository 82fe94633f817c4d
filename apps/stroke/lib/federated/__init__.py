"""Federated retraining across hospitals on NVIDIA FLARE: the site (``site``), its client script
(``client``), the aggregator (``controller``) and the job (``job``)."""
