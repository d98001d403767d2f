"""img2img.data."""
