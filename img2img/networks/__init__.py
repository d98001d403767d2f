"""img2img.networks."""
