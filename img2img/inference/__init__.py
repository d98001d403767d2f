"""img2img.inference."""
