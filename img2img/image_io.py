"""img2img.image_io (being written)."""
