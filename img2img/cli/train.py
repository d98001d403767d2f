"""`img2img train <method>`: one subcommand per entry of the ``METHODS`` table, generated from it.

Nothing here names a method. A subcommand's flags come from the method's config dataclass
(``img2img/training/config.py``): every field declared with ``option(help=...)`` becomes
``--name-with-dashes`` with the field's type, its choices, its help and its default shown; the
command's text is the method class's docstring. Three flags are not config
keys: ``--config FILE.yaml``, ``--resume`` and ``--set KEY=VALUE`` (which reaches any key). Only
flags given on the command line override the config file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import typing
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
import yaml

from img2img import torchrun
from img2img.cli.common import EXIT_SOME_FAILED, EXIT_USAGE, fail, get_context

if TYPE_CHECKING:
    from img2img.training.method import Method

# Options that are not config keys.
_NOT_CONFIG = ("config_file", "resume", "set_options")
_CLICK_TYPES: dict[Any, click.ParamType] = {int: click.INT, float: click.FLOAT, str: click.STRING}


def _methods() -> dict[str, type[Method]]:
    from img2img.training.methods import METHODS

    return METHODS


class MethodGroup(click.Group):
    """The ``train`` group: its subcommands are read from ``METHODS`` when asked for, so a new
    table entry is a new subcommand and importing the CLI does not import the training stack."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_methods())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        method_cls = _methods().get(cmd_name)
        return None if method_cls is None else method_command(cmd_name, method_cls)


def method_command(name: str, method_cls: type[Method]) -> click.Command:
    """The click command of ``method_cls``: its config's flags, then --config, --resume, --set."""
    from img2img.training.config import field_metadata

    config_cls = method_cls.config_class
    hints = typing.get_type_hints(config_cls)
    params: list[click.Parameter] = []
    for f in dataclasses.fields(config_cls):
        meta = field_metadata(config_cls, f.name)
        if meta.get("help"):
            params.append(_config_option(f.name, hints[f.name], f.default, meta))
    params += [
        click.Option(["--config", "config_file"], type=click.Path(dir_okay=False),
                     help="YAML file of options (every config key); flags given here override it."),
        click.Option(["--resume"], is_flag=True, help="Continue the run in --out exactly where it stopped."),
        click.Option(["--set", "set_options"], multiple=True, metavar="KEY=VALUE",
                     help="Set any config key (YAML value), e.g. --set lr_schedule=cosine. Repeatable."),
    ]
    text = _click_text(method_cls.__doc__ or name)

    def callback(**options: Any) -> None:
        run_method(name, options, upscaler=method_cls.dataset_kind == "sr")

    # The first paragraph as it is: click's own short help stops at the first ". " ("et al. 2017").
    short = " ".join(text.split("\n\n")[0].split())
    return click.Command(name, params=params, callback=callback, help=text, short_help=short)


def _click_text(doc: str) -> str:
    """A method's docstring as click help: indented lines (examples) keep their line breaks."""
    out: list[str] = []
    for line in inspect.cleandoc(doc).splitlines():
        if line.startswith(" ") and (not out or not out[-1].startswith(" ")):
            out += ["", "\b"]  # click: the indented block that follows is shown as written
        out.append(line)
    return "\n".join(out)


def _config_option(name: str, hint: Any, default: Any, meta: dict[str, Any]) -> click.Option:
    """``--name`` for config field ``name``: click default None, so an absent flag overrides nothing."""
    help_text = meta["help"]
    if meta.get("show_default", True) and default not in ("", None):
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        help_text = f"{help_text}  [default: {shown}]"
    decls = [f"--{name.replace('_', '-')}", name]
    if hint is bool:
        return click.Option([f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}", name], default=None,
                            help=help_text)
    if hint not in _CLICK_TYPES:
        raise TypeError(f"config field {name!r} ({hint}) cannot be a command-line flag; leave it to --set")
    callback = None
    if meta.get("choices"):
        kind: click.ParamType = click.Choice([str(c) for c in meta["choices"]])
        if hint is not str:  # click compares text; the config wants the field's type
            def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
                return None if value is None else hint(value)
    elif meta.get("path"):
        kind = click.Path(file_okay=meta["path"] != "dir", dir_okay=meta["path"] != "file")
    else:
        kind = _CLICK_TYPES[hint]
    return click.Option(decls, type=kind, default=None, callback=callback, help=help_text)


def run_method(method: str, options: dict[str, Any], *, upscaler: bool = False) -> None:
    """Turn parsed options into config overrides, train, and map errors to exit codes.

    ``upscaler``: the run's model is used with ``img2img upscale`` (else ``translate``).
    """
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
        command = "upscale" if upscaler else "translate"
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


@click.group(cls=MethodGroup, context_settings={"help_option_names": ["-h", "--help"]})
def train() -> None:
    """Train a model on your own data (one subcommand per method).

    \b
    Example:
      img2img train pix2pix --data datasets/facades --out runs/facades --steps 40000
      img2img train pix2pix --out runs/facades --resume
    """
