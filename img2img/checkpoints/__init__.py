"""Model files: our safetensors format, foreign reference checkpoints, and the model descriptor."""

from img2img.checkpoints.descriptor import ModelDescriptor

__all__ = ["ModelDescriptor"]
