"""`img2img serve`: start the local web page (img2img.web) with uvicorn.

Only starts the app: binds the socket (so a port in use is a usage error and port 0 a free
port), prints where it serves, opens the browser unless ``--no-open``, and runs until Ctrl-C.
"""

from __future__ import annotations

import ipaddress
import socket
import webbrowser
from pathlib import Path

import click

from img2img.cli.common import fail, get_context

# Seconds open event streams get to close when the server stops, before they are cut.
SHUTDOWN_GRACE_S = 2


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback exposes the page to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--models", "models", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder of model files and run directories to offer (repeatable); bundled models are always offered.")
@click.option("--open/--no-open", "open_browser", default=True, show_default=True,
              help="Open the page in the default browser.")
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=50, show_default=True,
              help="Largest upload per image, in MB.")
@click.option("--max-megapixels", type=click.FloatRange(min=0.01), default=25.0, show_default=True,
              help="Largest upload per image, in megapixels.")
def serve(host: str, port: int, models: tuple[Path, ...], open_browser: bool, max_upload_mb: int,
          max_megapixels: float) -> None:
    """Serve a local web page to upscale, translate and compare images."""
    try:
        import uvicorn

        from img2img.web import create_app
    except ImportError as err:
        fail(f"img2img serve needs the web extra ({err.name} is missing): pip install \"img2img[web]\"")
    from img2img.checkpoints import CheckpointError

    loopback = is_loopback(host)
    try:
        app = create_app(
            models,
            device=get_context().device,
            max_bytes=max_upload_mb * 2**20,
            max_pixels=int(max_megapixels * 1e6),
            # A loopback server answers only to its own names: a page on another site that
            # rebinds its domain to 127.0.0.1 gets refused (DNS rebinding).
            allowed_hosts=["127.0.0.1", "localhost", "::1", host.strip("[]")] if loopback else None,
        )
    except CheckpointError as err:
        fail(str(err))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host.strip("[]"), port), family=family)
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}")
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{bound}/"
    if not loopback:
        click.echo(f"warning: listening on {host}: anyone who can reach this machine can use the page "
                   "and run models on it; use --host 127.0.0.1 to keep it local", err=True)
    click.echo(f"serving on {url}", err=False)
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down (job files removed) and re-raises Ctrl-C: a normal stop
        pass
