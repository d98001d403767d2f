"""Shared fixtures: fixed seeds, and one intra-op thread for the modules that ask for it.

Helpers that are not fixtures (images made in code, ...) live in tests/helpers.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a whole module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Tiny nets gain nothing from intra-op threads, and on a shared 2-core machine the threads'
    barriers make many-small-op training loops several times slower. Module scope, so that the
    module's own module-scoped fixtures (trained models, datasets) run single-threaded too.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
