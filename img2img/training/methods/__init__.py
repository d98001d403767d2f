"""img2img.training.methods."""
