"""`img2img train {pix2pix,cyclegan,discogan,srgan}`: one subcommand per method, shared options.

Adding a method's subcommand takes a few lines::

    @train.command("srgan")
    @common_options
    @click.option("--scale", type=int, help="...")
    def srgan(**options): run_method("srgan", options)

Every option maps to the config key of the same name (dashes -> underscores); only options
given on the command line override the config file. ``--set KEY=VALUE`` reaches any other key.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import click
import yaml

from img2img import torchrun
from img2img.cli.common import EXIT_SOME_FAILED, EXIT_USAGE, fail, get_context

# Options that are not config keys.
_NOT_CONFIG = ("config_file", "resume", "set_options")


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every ``train`` subcommand shares."""
    decorators = [
        click.option("--data", type=click.Path(file_okay=False), help="Dataset root (see docs/data.md)."),
        click.option("--out", type=click.Path(file_okay=False), help="Run directory: checkpoints, model, logs."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="YAML file of options (every config key); flags given here override it."),
        click.option("--steps", type=int, help="Optimiser steps in total."),
        click.option("--epochs", type=int, help="Passes over the training set (when --steps is not given)."),
        click.option("--batch-size", type=int, help="Images per batch."),
        click.option("--image-size", type=int, help="Training crop side in pixels."),
        click.option("--seed", type=int, help="Random seed (CPU runs repeat exactly)."),
        click.option("--device", "device", type=str, default=None,
                     help="auto, cpu, cuda, cuda:N or mps (default: the global --device)."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     help="Mixed precision on GPUs (auto: bf16, else fp16; fp32 on CPU)."),
        click.option("--ema-decay", type=float, help="EMA of the generator weights, e.g. 0.999 (0: off)."),
        click.option("--num-workers", type=int, help="Data loader worker processes."),
        click.option("--save-every", type=int, help="Also export a numbered model snapshot every N steps "
                     "(RUN_DIR/snapshots/step_NNNNNN.safetensors, each usable as --model); 0: off."),
        click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped."),
        click.option("--set", "set_options", multiple=True, metavar="KEY=VALUE",
                     help="Set any config key (YAML value), e.g. --set lr_schedule=cosine. Repeatable."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def run_method(method: str, options: dict[str, Any]) -> None:
    """Turn parsed options into config overrides, train, and map errors to exit codes."""
    from img2img.data import DataError
    from img2img.image_io import ImageIOError
    from img2img.training.config import ConfigError
    from img2img.training.loop import NonFiniteLossError
    from img2img.training.run import train as train_run
    from img2img.training.state import CheckpointError

    ctx = get_context()
    config_file = options.get("config_file")
    resume = bool(options.get("resume"))
    overrides = {k: v for k, v in options.items() if k not in _NOT_CONFIG and v is not None}
    if "device" not in overrides and ctx.device != "auto":
        overrides["device"] = ctx.device
    for item in options.get("set_options") or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:
            fail(f"--set {key}: cannot parse value {value!r}")
    try:
        with _one_line_bad_image_warnings():
            result = train_run(method, overrides, config_file=config_file, resume=resume,
                               progress=ctx.verbosity > 0)
    except (ConfigError, CheckpointError) as e:
        fail(str(e), EXIT_USAGE)
    except NonFiniteLossError as e:
        fail(str(e), EXIT_SOME_FAILED)
    except (DataError, ImageIOError) as e:
        fail(str(e), EXIT_USAGE)
    except OSError as e:  # e.g. a full disk while writing the log or a sample
        fail(f"{str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}", EXIT_USAGE)
    rank = torchrun.from_environment()
    if ctx.verbosity > 0 and (rank is None or rank.is_main):  # under torchrun: rank 0 reports
        losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        click.echo(f"trained {result.step}/{result.total_steps} steps; {losses}")
        command = "upscale" if method == "srgan" else "translate"
        click.echo(f"model: {result.run_dir} (use: img2img {command} SRC DST --model {result.run_dir})")


@contextlib.contextmanager
def _one_line_bad_image_warnings() -> Iterator[None]:
    """A skipped training image is one line naming it (``warning: PATH: reason``), not a Python
    warning with its source location. DataLoader worker processes forked inside inherit it."""
    from img2img.data import BadImageWarning

    previous = warnings.formatwarning

    def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 line: str | None = None) -> str:
        if issubclass(category, BadImageWarning):
            return f"warning: {message}\n"
        return previous(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = previous


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def train() -> None:
    """Train a model on your own data (one subcommand per method).

    \b
    Example:
      img2img train pix2pix --data datasets/facades --out runs/facades --steps 40000
      img2img train pix2pix --out runs/facades --resume
    """


@train.command("pix2pix")
@common_options
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]), help="Learn a -> b (AtoB) or b -> a.")
@click.option("--ngf", type=int, help="Generator width (64 in the paper; e.g. 16 for a CPU).")
@click.option("--ndf", type=int, help="Discriminator width (64 in the paper).")
@click.option("--num-downs", type=int, help="U-Net depth (default: follows --image-size).")
@click.option("--lr", type=float, help="Adam learning rate for both networks (2e-4).")
@click.option("--gan-loss", type=click.Choice(["vanilla", "lsgan", "hinge", "wgan-gp"]), help="GAN objective.")
@click.option("--l1-weight", type=float, help="Weight of the L1 term (100).")
def pix2pix(**options: Any) -> None:
    """Pix2Pix: U-Net + conditional PatchGAN on paired images (A/B folders or side-by-side AB)."""
    run_method("pix2pix", options)


@train.command("srgan")
@common_options
@click.option("--scale", type=click.Choice(["2", "3", "4"]), callback=lambda c, p, v: None if v is None else int(v),
              help="Upscaling factor (rrdbnet: 2 or 4).")
@click.option("--arch", type=click.Choice(["srresnet", "msrresnet", "rrdbnet"]),
              help="Generator: srresnet (paper, BN), msrresnet (BasicSR, no BN) or rrdbnet (ESRGAN).")
@click.option("--num-feat", type=int, help="Generator width (64 in the paper).")
@click.option("--num-block", type=int, help="Generator residual blocks (0: the architecture's default).")
@click.option("--pretrain-steps", type=int, help="Phase 1 steps (pixel loss only); the rest is phase 2 (GAN).")
@click.option("--pixel-loss", type=click.Choice(["l2", "l1", "charbonnier"]), help="Pixel loss (l2 = MSE).")
@click.option("--pixel-weight", type=float, help="Weight of the pixel loss in phase 2 (0).")
@click.option("--perceptual", type=click.Choice(["vgg", "none"]), help="Phase 2 content loss on VGG19 features.")
@click.option("--perceptual-layer", type=str, help="VGG19 layer of the content loss (relu5_4 = VGG54).")
@click.option("--perceptual-weight", type=float, help="Weight of the content loss (0.006).")
@click.option("--vgg-weights", type=click.Path(dir_okay=False), help="Local torchvision vgg19 state dict (.pth).")
@click.option("--gan-mode", type=click.Choice(["vanilla", "ragan"]), help="Adversarial loss (ragan: ESRGAN).")
@click.option("--adv-weight", type=float, help="Weight of the adversarial loss (1e-3).")
@click.option("--lr-g", type=float, help="Generator Adam learning rate (1e-4).")
@click.option("--lr-d", type=float, help="Discriminator Adam learning rate (1e-4).")
@click.option("--init-from", type=str,
              help="Start the generator from this model (run dir, .safetensors or reference .pth), e.g. the "
                   "SRResNet for phase 2 or a run to fine-tune; same architecture and sizes.")
@click.option("--val-data", type=click.Path(file_okay=False), help="Held-out HR folder for validation PSNR/SSIM.")
@click.option("--val-every", type=int, help="Validate every N steps (PSNR/SSIM on Y, border crop = scale).")
def srgan(**options: Any) -> None:
    """SRGAN / SRResNet super-resolution from a folder of HR images (LR made by bicubic downscaling).

    \b
    Example (PSNR model only, then GAN fine-tuning):
      img2img train srgan --data photos --out runs/sr --scale 4 --steps 20000 --pretrain-steps 20000
      img2img train srgan --data photos --out runs/srgan --scale 4 --steps 40000 --pretrain-steps 20000
    """
    run_method("srgan", options)


def cycle_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the cycle methods (cyclegan and its discogan preset: same keys, other defaults)."""
    decorators = [
        click.option("--generator", type=click.Choice(["resnet_9blocks", "resnet_6blocks", "resnet", "unet_128",
                                                       "unet_256", "discogan_g"]), help="Generator architecture."),
        click.option("--ngf", type=int, help="Generator width (64 in the papers; e.g. 16 for a CPU)."),
        click.option("--ndf", type=int, help="Discriminator width (64 in the papers)."),
        click.option("--lr", type=float, help="Adam learning rate for generators and discriminators (2e-4)."),
        click.option("--gan-loss", type=click.Choice(["lsgan", "vanilla", "hinge", "wgan-gp"]), help="GAN objective."),
        click.option("--lambda-cycle", type=float, help="Weight of each cycle-consistency term."),
        click.option("--lambda-identity", type=float, help="Identity term weight relative to --lambda-cycle (0: off)."),
        click.option("--pool-size", type=int, help="Fakes kept in each discriminator's history pool (0: off)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


@train.command("cyclegan")
@common_options
@cycle_options
def cyclegan(**options: Any) -> None:
    """CycleGAN: two ResNet generators + two PatchGANs on unpaired folders (trainA/, trainB/).

    \b
    Defaults as Zhu et al. 2017: resnet_9blocks, instance norm, LSGAN, --lambda-cycle 10,
    --lambda-identity 0.5, --pool-size 50, learning rate constant then linear decay to 0.
    Exports RUN_DIR/g_ab.safetensors and g_ba.safetensors:
      img2img train cyclegan --data datasets/horse2zebra --out runs/h2z --epochs 200
      img2img translate horses/ zebras/ --model runs/h2z --direction AtoB
    """
    run_method("cyclegan", options)


@train.command("discogan")
@common_options
@cycle_options
def discogan(**options: Any) -> None:
    """DiscoGAN: the cycle method with Kim et al. 2017's networks and losses (a preset of cyclegan).

    \b
    Defaults: discogan_g / discogan_d (batch norm), 64-px images, batch 64, BCE GAN loss,
    squared-error reconstruction of weight 1 on both sides, no identity loss, no pool.
      img2img train discogan --data datasets/edges2shoes_unpaired --out runs/e2s --steps 20000
    """
    run_method("discogan", options)
