"""img2img.training."""
