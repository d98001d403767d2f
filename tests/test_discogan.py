"""DiscoGAN (the cycle method's preset): it learns, and its defaults reach the CLI."""

from __future__ import annotations

import pytest

from img2img.training.methods.cycle import DiscoGAN, DiscoGANConfig
from tests.helpers import check_learned, learn

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


@pytest.mark.slow
def test_discogan_learns_a_colour_shift(tmp_path) -> None:
    """DiscoGAN nets (ngf = ndf = 8), 64 px (its discriminator's size), batch 4, 200 steps.

    Its preset losses (BCE GAN, squared-error reconstruction of weight 1, no identity, no pool);
    a learning rate of 1e-3 instead of 2e-4 so a few hundred steps suffice.
    """
    result = learn(DiscoGAN, DiscoGANConfig, size=64, steps=200, tmp_path=tmp_path, batch_size=4, lr=1e-3)
    check_learned(result)
