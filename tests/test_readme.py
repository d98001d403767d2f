"""The README's examples, run as written.

Every ```bash and ```python block of README.md runs, in order, in one workspace folder that holds
what the examples name: small photos (from scikit-image's freely licensed ones) and stand-ins for
the reference checkpoints users download (``RealESRGAN_x4plus.pth``,
``checkpoints/horse2zebra/latest_net_G_A.pth``, ...): tiny networks saved in the reference
projects' own key layouts, so detection and loading run for real. Commands that need what this
machine lacks (a CUDA GPU, internet, several machines) sit in blocks marked
``<!-- readme-test: skip: REASON -->``; their ``img2img`` command lines are still parsed by the CLI,
so a renamed or mistyped option fails here too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip:\s*(?P<why>[^>]*?)\s*-->\s*\n$")
FENCE = re.compile(r"^```(?P<lang>bash|python)\n(?P<body>.*?)^```", re.S | re.M)


@dataclass
class Block:
    lang: str
    body: str
    line: int
    skip: str | None


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()]
        skip = SKIP.search(before[-300:])
        blocks.append(Block(m["lang"], m["body"], before.count("\n") + 1, skip["why"] if skip else None))
    return blocks


def command_lines(body: str) -> list[list[str]]:
    """Shell command lines of a block (continuations joined, comments and heredoc bodies dropped)."""
    lines, heredoc_end = [], None
    for raw in body.replace("\\\n", " ").splitlines():
        if heredoc_end is not None:
            heredoc_end = None if raw.strip() == heredoc_end else heredoc_end
            continue
        words = shlex.split(raw, comments=True)
        if words:
            lines.append(words)
            if "<<" in raw:
                heredoc_end = raw.split("<<", 1)[1].strip().strip("'\"").split()[0]
    return lines


def img2img_args(words: list[str]) -> list[str] | None:
    """The img2img arguments of a command line (plain, ``python -m img2img`` or under torchrun)."""
    if words[0] == "img2img":
        return words[1:]
    if "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["img2img"]:
        return words[words.index("-m") + 2 :]
    return None


def parse_only(args: list[str]) -> None:
    """Parse an img2img command line with the real CLI without running it (UsageError if wrong)."""
    from img2img.cli import cli

    ctx = cli.make_context("img2img", list(args))
    command: click.Command = cli
    rest = [*ctx._protected_args, *ctx.args]
    while isinstance(command, click.Group):
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None, f"unknown command {name}"
        command = sub
        try:
            ctx = command.make_context(name, rest, parent=ctx)
        except click.BadParameter as e:
            if "does not exist" not in str(e):  # files of a machine we are not on are fine
                raise
            return
        rest = [*ctx._protected_args, *ctx.args]


# ----------------------------------------------------------------------------------- the workspace


def photo(name: str, size: tuple[int, int]) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size, Image.Resampling.LANCZOS)


def tiny_reference_files(ws: Path) -> None:
    """Stand-ins with the reference projects' key layouts (real files hold full-size networks)."""
    from img2img.networks import build

    torch.manual_seed(0)
    for name, scale in (("RealESRGAN_x4plus.pth", 4), ("RealESRGAN_x2plus.pth", 2)):
        net = build("rrdbnet", scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
        torch.save({"params_ema": net.state_dict()}, ws / name)  # Real-ESRGAN's release wrapping
    # junyanz/pytorch-CycleGAN-and-pix2pix: bare state dicts of the generator module.
    for folder, files in (("horse2zebra_pretrained", ("latest_net_G.pth",)),
                          ("horse2zebra", ("latest_net_G_A.pth", "latest_net_G_B.pth"))):
        (ws / "checkpoints" / folder).mkdir(parents=True)
        for file in files:
            net = build("resnet_9blocks", ngf=4, norm="instance")
            torch.save(net.state_dict(), ws / "checkpoints" / folder / file)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("readme")
    photo("chelsea", (120, 80)).save(ws / "photo.jpg", quality=92)
    for folder, names in (("photos", ("astronaut", "coffee")), ("photos/holiday", ("rocket",)),
                          ("shots", ("chelsea", "coffee")), ("horses", ("chelsea", "astronaut"))):
        (ws / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            photo(name, (96, 64)).save(ws / folder / f"{name}.png")
    tiny_reference_files(ws)
    (ws / "datasets").symlink_to(ROOT / "datasets")  # `python datasets/download.py ...` as from the repo
    return ws


def environment(ws: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["HOME"] = str(ws / "home")  # no user cache of models leaks in or out
    env.pop("XDG_CACHE_HOME", None)
    env.pop("IMG2IMG_WEIGHTS_DIR", None)
    env["TORCH_HOME"] = str(ws / "home" / "torch")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ------------------------------------------------------------------------------------------ tests


def test_readme_has_runnable_examples_and_every_skip_says_why() -> None:
    blocks = readme_blocks()
    assert sum(b.skip is None for b in blocks) >= 8
    for b in blocks:
        assert b.skip is None or len(b.skip) > 10, f"README.md:{b.line}: a skipped block needs its reason"


@pytest.mark.parametrize("block", [b for b in readme_blocks() if b.skip], ids=lambda b: f"line{b.line}")
def test_skipped_blocks_still_parse(block: Block) -> None:
    """What cannot run here (CUDA, internet, many machines) must at least be valid img2img syntax."""
    for words in command_lines(block.body):
        args = img2img_args(words)
        if args is not None:
            parse_only(args)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # every README command in turn (training, export, serve blocks): minutes, not seconds
def test_readme_examples_run_in_order(workspace: Path) -> None:
    env = environment(workspace)
    for block in readme_blocks():
        if block.skip:
            continue
        if block.lang == "bash":
            cmd = ["bash", "-euo", "pipefail", "-c", block.body]
        else:
            cmd = [sys.executable, "-c", block.body]
        result = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (
            f"README.md:{block.line} ({block.lang}) exited {result.returncode}\n{block.body}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        )
