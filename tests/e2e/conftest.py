"""The shared server of the end-to-end tests: all tasks, on generated studies plus broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from monailabel.client import MONAILabelClient

from strokelabel.phantom import generate_dataset
from tests.e2e import broken_studies
from tests.e2e.server import running_server


@pytest.fixture(scope="session")
def studies_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("studies")
    generate_dataset(root, per_kind=3, labelled_per_kind=2, size="small", seed=7, progress=lambda *a, **k: None)
    broken_studies.plant(root)
    return root


@pytest.fixture(scope="session")
def server(tmp_path_factory, studies_dir):
    try:
        with running_server(tmp_path_factory.mktemp("server"), studies_dir, models="all") as srv:
            yield srv
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture
def client(server) -> MONAILabelClient:
    return server.client


def _reference_phantoms(kind: str) -> None:
    """The trainers' held-out reference phantoms of ``kind`` (lib.trainers.reference_studies), made
    before a server trains: on a fresh machine the first training would otherwise spend its time
    limit generating them (they are cached after, in the app's cache, for every later run)."""
    from lib.trainers.reference_studies import phantom_references, rehearsal_phantoms

    phantom_references()(kind)
    if kind == "mri":  # the MRI lesion trainer's on-site recipe rehearses on phantoms of its own generator
        from lib.trainers.ischemic_lesion import ON_SITE_RECIPE

        rehearsal_phantoms(kind, ON_SITE_RECIPE.get("rehearsal_studies", 0))


@pytest.fixture(scope="session")
def mri_reference_phantoms() -> None:
    _reference_phantoms("mri")


@pytest.fixture(scope="session")
def ctp_reference_phantoms() -> None:
    _reference_phantoms("ctp")


@pytest.fixture(scope="session")
def cta_reference_phantoms() -> None:
    _reference_phantoms("cta")
