"""img2img.metrics (being written)."""
