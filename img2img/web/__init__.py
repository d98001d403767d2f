"""A local web page to upscale, translate and compare images (``img2img serve``; docs/web.md).

    from img2img.web import create_app

    app = create_app(["runs/"])          # an ASGI app: serve it with uvicorn, or mount it
    uvicorn.run(app, host="127.0.0.1", port=8765)

Needs the ``web`` extra (``pip install "img2img[web]"``: Starlette, uvicorn, python-multipart).
"""

from img2img.web.app import create_app
from img2img.web.models import ModelEntry, find_models

__all__ = ["ModelEntry", "create_app", "find_models"]
