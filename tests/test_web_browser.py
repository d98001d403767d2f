"""The web page in a real browser: Playwright drives Debian's Chromium against a uvicorn server.

Playwright's own browser download is not reachable here, so the system's ``/usr/bin/chromium``
is used (``.ci/run`` installs it). Without it these tests fail; they never skip.
"""

from __future__ import annotations

import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from click.testing import CliRunner
from playwright.sync_api import Browser, Page, expect, sync_playwright

from img2img import image_io
from img2img.cli import cli
from img2img.web import create_app
from tests.helpers import smooth_rgb
from tests.web_fixtures import models_folder, photo

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 60_000  # a shared 2-core machine: generous, yet a hang fails


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web")


@pytest.fixture(scope="module")
def models(folder: Path) -> Path:
    return models_folder(folder / "models")


@pytest.fixture
def server(models: Path, folder: Path) -> Iterator[str]:
    """A fresh app (no jobs of other tests) on 127.0.0.1 at a free port, in a thread; no user cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(folder / "xdg_cache"))
        mp.delenv("IMG2IMG_WEIGHTS_DIR", raising=False)
        app = create_app([models])
        sock = socket.create_server(("127.0.0.1", 0))  # listening before the thread starts: no wait needed
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive() and not app.state.root.exists()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); .ci/run does")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page.goto(server)
    expect(page.get_by_test_id("model").locator("option")).not_to_have_count(0)
    yield page
    context.close()


def advanced(page: Page, **values: str) -> None:
    page.locator("#advanced summary").click()
    for key, value in values.items():
        field = page.locator(f"#{key}")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


def fetch(page: Page, url: str) -> bytes:
    response = page.request.get(url)
    assert response.ok, url
    return response.body()


def decode(data: bytes, folder: Path, name: str) -> np.ndarray:
    path = folder / name
    path.write_bytes(data)
    return image_io.read_image(path).pixels


def cli_output(folder: Path, *args: str) -> np.ndarray:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return image_io.read_image(args[2]).pixels


def test_upload_gives_the_same_result_as_img2img_upscale(page: Page, folder: Path, tmp_path: Path) -> None:
    src = photo(tmp_path / "photo.png", 30, 34)
    page.get_by_test_id("model").select_option("sr-tiny")
    advanced(page, tile="16")
    page.get_by_test_id("file-input").set_input_files(str(src))
    page.get_by_test_id("run").click()
    result = page.get_by_test_id("result")
    expect(result).to_be_visible()
    # Per-tile progress reached the page: 16-px tiles make several, and the bar ends full.
    progress = page.get_by_test_id("progress")
    assert int(progress.get_attribute("max")) > 1
    assert progress.evaluate("p => p.value === p.max")
    link = page.get_by_test_id("download")
    assert link.get_attribute("download") == "photo_sr-tiny.png"
    got = decode(fetch(page, link.evaluate("a => a.href")), tmp_path, "got.png")
    expected = cli_output(folder, "upscale", str(src), str(tmp_path / "cli.png"),
                          "--model", str(folder / "models" / "sr-tiny.safetensors"), "--tile", "16")
    assert got.shape == expected.shape == (60, 68, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert result.evaluate("img => img.naturalWidth") == 68  # the page shows the real result


def test_the_model_denoise_strength_is_offered_for_paired_models_and_matches_the_cli(
    page: Page, folder: Path, tmp_path: Path
) -> None:
    src = photo(tmp_path / "photo.png", 24, 28)
    strength = page.locator("#strength")
    page.get_by_test_id("model").select_option("sr-tiny")
    expect(strength).to_be_disabled()  # no card declaring a real-world companion
    page.get_by_test_id("model").select_option("img2img-sr-x2")
    expect(strength).to_be_enabled()
    expect(page.locator("#strength-note")).to_have_text("default 0.5")
    advanced(page, strength="0")
    page.get_by_test_id("file-input").set_input_files(str(src))
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("result")).to_be_visible()
    got = decode(fetch(page, page.get_by_test_id("download").evaluate("a => a.href")), tmp_path, "got.png")
    expected = cli_output(folder, "upscale", str(src), str(tmp_path / "cli.png"), "--scale", "2", "--denoise", "0")
    assert got.shape == expected.shape == (48, 56, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_several_files_are_queued_and_all_done_then_zipped(page: Page, tmp_path: Path) -> None:
    files = [photo(tmp_path / f"p{i}.png", 16 + 4 * i, 20, seed=i) for i in range(3)]
    page.get_by_test_id("model").select_option("sr-tiny")
    page.get_by_test_id("file-input").set_input_files([str(f) for f in files])
    expect(page.locator("#picked li")).to_have_count(3)
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("result")).to_have_count(3)
    expect(page.get_by_test_id("download")).to_have_count(3)
    expect(page.locator("#queue li[data-status=done]")).to_have_count(3)
    archive = zipfile.ZipFile(io.BytesIO(fetch(page, page.locator("#download-all").evaluate("a => a.href"))))
    assert sorted(archive.namelist()) == ["p0_sr-tiny.png", "p1_sr-tiny.png", "p2_sr-tiny.png"]
    assert page.get_by_test_id("error").count() == 0


def test_cancel_a_running_and_a_waiting_job_and_the_queue_goes_on(page: Page, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    image_io.write_image(big, image_io.Image(pixels=smooth_rgb(384, 384, seed=5)))
    waiting, after = photo(tmp_path / "waiting.png"), photo(tmp_path / "after.png", seed=2)
    page.get_by_test_id("model").select_option("sr-tiny")
    advanced(page, tile="16")  # thousands of tiny tiles: the big image runs long enough to cancel
    page.get_by_test_id("file-input").set_input_files([str(big), str(waiting), str(after)])
    page.get_by_test_id("run").click()
    rows = page.locator("#queue li.job")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_have_attribute("data-status", "running")
    expect(rows.nth(0).locator(".state")).to_contain_text("tiles")  # progress has started
    rows.nth(1).get_by_role("button", name="Cancel").click()
    expect(rows.nth(1)).to_have_attribute("data-status", "cancelled")
    rows.nth(0).get_by_role("button", name="Cancel").click()
    expect(rows.nth(0)).to_have_attribute("data-status", "cancelled")
    expect(rows.nth(2)).to_have_attribute("data-status", "done")
    assert rows.nth(1).get_by_test_id("progress").evaluate("p => p.value") == 0  # it never ran
    expect(page.get_by_test_id("result")).to_have_count(1)
    assert page.get_by_test_id("download").get_attribute("download") == "after_sr-tiny.png"


def test_bad_files_show_an_error_naming_them_and_the_rest_go_on(page: Page, tmp_path: Path) -> None:
    notes, broken = tmp_path / "notes.txt", tmp_path / "broken.png"
    notes.write_text("not a picture")
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    good = photo(tmp_path / "good.png")
    page.get_by_test_id("model").select_option("sr-tiny")
    page.get_by_test_id("file-input").set_input_files([str(notes), str(broken), str(good)])
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("result")).to_have_count(1)
    errors = page.get_by_test_id("error")
    expect(errors).to_have_count(2)
    assert errors.nth(0).inner_text().startswith("notes.txt: not a supported image file")
    assert errors.nth(1).inner_text().startswith("broken.png: ")
    assert str(tmp_path) not in errors.nth(1).inner_text()
    # The server still serves: another upload runs.
    page.get_by_test_id("file-input").set_input_files(str(photo(tmp_path / "again.png", seed=3)))
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("result")).to_have_count(2)


def test_translate_with_a_training_run_directory(page: Page, folder: Path, tmp_path: Path) -> None:
    src = photo(tmp_path / "horse.png", 24, 28)
    page.get_by_label("Translate").check()
    model = page.get_by_test_id("model")
    assert model.locator("option").evaluate_all("os => os.map(o => o.value)") == ["cyc-AtoB", "cyc-BtoA"]
    model.select_option("cyc-BtoA")
    page.get_by_test_id("file-input").set_input_files(str(src))
    page.get_by_test_id("run").click()
    link = page.get_by_test_id("download")
    expect(link).to_have_attribute("download", "horse_cyc-BtoA.png")
    got = decode(fetch(page, link.evaluate("a => a.href")), tmp_path, "got.png")
    expected = cli_output(folder, "translate", str(src), str(tmp_path / "cli.png"),
                          "--model", str(folder / "models" / "cyc"), "--direction", "BtoA")
    assert got.shape == expected.shape == (24, 28, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_compare_models_side_by_side_with_keyboard_divider_and_1_to_1(page: Page, tmp_path: Path) -> None:
    src = photo(tmp_path / "cat.png", 24, 32)
    page.get_by_test_id("file-input").set_input_files(str(src))
    page.locator("#compare-panel summary").click()
    for box in page.locator("#compare-models input").all():
        box.set_checked(box.get_attribute("value") in ("sr-tiny", "img2img-sr-x2"))
    page.get_by_role("button", name="Compare", exact=True).click()
    group = page.locator(".results-group")
    expect(group.get_by_test_id("compare")).to_have_count(2)
    labels = sorted(group.locator("figcaption .meta").all_inner_texts())
    assert labels[0].startswith("img2img-sr-x2") and labels[1].startswith("sr-tiny ×2")
    boxes = [b.bounding_box() for b in group.locator("figure").all()]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"]  # side by side

    compare = group.get_by_test_id("compare").first
    divider = compare.get_by_role("slider")
    divider.focus()
    page.keyboard.press("End")
    expect(divider).to_have_attribute("aria-valuenow", "100")
    page.keyboard.press("ArrowLeft")
    expect(divider).to_have_attribute("aria-valuenow", "98")
    page.keyboard.press("Home")
    expect(divider).to_have_attribute("aria-valuenow", "0")
    box = compare.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2)
    assert 20 <= int(divider.get_attribute("aria-valuenow")) <= 30
    clip = compare.locator(".before-clip").evaluate("e => getComputedStyle(e).clipPath")
    assert clip.startswith("inset(") and clip != "inset(0px)"

    zoom = group.locator("figure").first.get_by_role("button", name="1:1")
    zoom.press("Enter")
    expect(zoom).to_have_attribute("aria-pressed", "true")
    natural = compare.get_by_test_id("result").evaluate("img => img.naturalWidth / devicePixelRatio")
    assert compare.evaluate("e => e.getBoundingClientRect().width") == pytest.approx(natural, abs=0.5)


def test_a_folder_brings_its_images_only(page: Page, tmp_path: Path) -> None:
    folder = tmp_path / "holiday"
    (folder / "day2").mkdir(parents=True)
    photo(folder / "beach.png")
    photo(folder / "day2" / "hill.png", seed=2)
    (folder / "notes.txt").write_text("not a picture")
    page.locator("#folder-input").set_input_files(str(folder))
    expect(page.locator("#picked li")).to_have_count(2)
    assert sorted(t.rstrip(" ×") for t in page.locator("#picked li").all_inner_texts()) == [
        "holiday/beach.png", "holiday/day2/hill.png"]


def test_empty_states_keyboard_remove_and_a_screenshot(page: Page, tmp_path: Path) -> None:
    expect(page.locator("#picked-empty")).to_be_visible()
    expect(page.locator("#queue-empty")).to_be_visible()
    page.get_by_test_id("run").click()
    expect(page.locator("#status")).to_have_text("Choose one or more images first.")
    page.get_by_label("Translate").check()
    expect(page.get_by_test_id("model").locator("option")).to_have_count(2)  # the run's two directions
    page.get_by_label("Upscale").check()
    # Enter on the drop zone opens the file picker (the click is caught so no dialog opens).
    page.evaluate("""() => document.querySelector("[data-testid=file-input]").addEventListener("click",
        (e) => { e.preventDefault(); document.body.dataset.picker = "opened"; })""")
    page.locator("#drop").focus()
    page.keyboard.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-picker", "opened")
    page.get_by_test_id("model").select_option("sr-tiny")
    page.get_by_test_id("file-input").set_input_files(str(photo(tmp_path / "shot.png", 40, 48)))
    page.get_by_test_id("run").click()
    expect(page.locator("#results figure").first).to_be_visible()
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert image_io.read_image(shot).width == 1280
    page.locator("#queue li").get_by_role("button", name="Remove").click()
    expect(page.locator("#results figure")).to_have_count(0)
    expect(page.locator("#queue-empty")).to_be_visible()
    expect(page.locator("#results-empty")).to_be_visible()
