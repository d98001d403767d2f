"""img2img.losses (being written)."""
