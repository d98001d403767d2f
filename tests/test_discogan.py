"""DiscoGAN (the cycle method's preset): it learns, and its defaults reach the CLI."""

from __future__ import annotations

import pytest
import torch

from img2img.training.methods.cycle import DiscoGAN, DiscoGANConfig
from tests.test_cycle import check_learned, learn


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets gain nothing from a second thread, and an oversubscribed shared machine loses a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_discogan_learns_a_colour_shift(tmp_path) -> None:
    """DiscoGAN nets (ngf = ndf = 8), 64 px (its discriminator's size), batch 4, 200 steps.

    Its preset losses (BCE GAN, squared-error reconstruction of weight 1, no identity, no pool);
    a learning rate of 1e-3 instead of 2e-4 so a few hundred steps suffice.
    """
    result = learn(DiscoGAN, DiscoGANConfig, size=64, steps=200, tmp_path=tmp_path, batch_size=4, lr=1e-3)
    check_learned(result)
