"""Upload a 512 px photo to `img2img serve`'s page in Chromium, time it to the result, screenshot the page.

    python scripts/web_screenshot.py [--model img2img-sr-x4] [--out docs/web.png] [--chromium /usr/bin/chromium]

First runs the engine on scikit-image's 512x512 ``astronaut`` photo (NASA, public domain) in this
process, as `img2img upscale` would (the baseline). Then starts the app (bundled models) on a free
loopback port, opens the page in headless Chromium through Playwright, picks the same photo,
presses Run and waits for the result image. Prints both times, their ratio and the load average;
writes the page's screenshot to ``--out`` (docs/web.png in the README), reduced to 256 colours.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import PIL.Image
import skimage.data
import uvicorn
from playwright.sync_api import expect, sync_playwright

from img2img import image_io
from img2img.checkpoints import load_model
from img2img.inference import Engine
from img2img.web import create_app

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="img2img-sr-x4")
    parser.add_argument("--out", type=Path, default=Path("docs/web.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    pixels = skimage.data.astronaut()
    start = time.perf_counter()
    baseline = Engine(load_model(args.model))(image_io.Image(pixels=pixels))
    engine_s = time.perf_counter() - start
    print(f"engine alone: {engine_s:.1f} s (model load included) -> {baseline.width}x{baseline.height}")

    app = create_app()
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        photo = Path(tmp) / "astronaut.png"
        image_io.write_image(photo, image_io.Image(pixels=pixels))
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url)
        page.get_by_test_id("model").select_option(args.model)
        page.get_by_test_id("file-input").set_input_files(str(photo))
        start = time.perf_counter()
        page.get_by_test_id("run").click()
        result = page.get_by_test_id("result")
        expect(result).to_be_visible(timeout=600_000)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=result.element_handle())
        seconds = time.perf_counter() - start
        (job,) = app.state.jobs.all()
        load = os.getloadavg()
        print(f"{args.model}, 512x512 -> {job.width}x{job.height}: {seconds:.1f} s from Run to the result on the page "
              f"(job {job.seconds:.1f} s on the server, {job.total} tiles; {seconds / engine_s:.2f}x the engine alone); "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
        page.locator("[data-testid=compare] [role=slider]").focus()
        for _ in range(5):
            page.keyboard.press("ArrowLeft")  # a little off centre, as someone comparing would leave it
        page.locator("body").click(position={"x": 5, "y": 5})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shot = page.screenshot()
        PIL.Image.open(io.BytesIO(shot)).convert("RGB").quantize(256).save(args.out, optimize=True)
        print(f"wrote {args.out}")
        browser.close()
    server.should_exit = True
    thread.join(timeout=30)


if __name__ == "__main__":
    main()
