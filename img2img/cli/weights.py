"""`img2img weights {list,get,info,convert}`: find, fetch, inspect and convert model files.

- ``list``: bundled and cached models (``$IMG2IMG_WEIGHTS_DIR``, the repo's ``weights/``, the user
  cache) with architecture and scale read from their metadata; ``--available``: the model zoo
  (published models we can run) with architecture, scale, licence, size, SHA-256 and URL.
- ``get NAME``: download a zoo model into the cache (resumable, verified); ``--from`` takes the
  same file from a mirror URL or a local copy, still verified.
- ``info SOURCE``: what loading SOURCE (bundled name, file or run directory) gives: architecture,
  kwargs, scale, channels, value range, size requirements, InstanceNorm, parameter count.
- ``convert IN OUT.safetensors``: any loadable source -> our format, with provenance.

Errors are one line on stderr naming the file and the reason, exit code 2.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import click

from img2img.cli.common import fail

_DIRECTION = click.Choice(["AtoB", "BtoA"])


@click.group()
def weights() -> None:
    """List, fetch (the model zoo), inspect and convert model files."""


def _hint_options(f: Any) -> Any:
    f = click.option(
        "--direction",
        type=_DIRECTION,
        default=None,
        help="Generator of a two-generator source (default AtoB).",
    )(f)
    f = click.option(
        "--scale",
        type=click.IntRange(min=1),
        default=None,
        help="Upscaling factor, when the file leaves it ambiguous.",
    )(f)
    f = click.option(
        "--arch", default=None, help="Registry architecture name, when detection is ambiguous or fails."
    )(f)
    return f


@weights.command("list")
@click.option(
    "--available", is_flag=True, help="The model zoo: published models `weights get` can fetch."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def list_command(available: bool, as_json: bool) -> None:
    """Bundled and cached models, with architecture and scale (--available: the model zoo)."""
    from img2img.checkpoints import CheckpointError, list_bundled, read_metadata, search_dirs

    if available:
        _list_zoo(as_json)
        return

    rows = []
    for model in list_bundled():
        row: dict[str, Any] = {"name": model.name, "location": model.location, "path": str(model.path)}
        try:
            document = read_metadata(model.path)
        except CheckpointError as e:
            row["error"] = str(e)
        else:
            if document is None:
                row["arch"] = "(not img2img metadata)"
            else:
                row.update(
                    arch=document["arch"], scale=document["scale"], value_range=document["value_range"]
                )
        rows.append(row)
    rows += _cached_zoo_rows()

    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        where = ", ".join(str(folder) for _, folder in search_dirs())
        click.echo(f"no models found (searched {where})")
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        what = r.get("error") or f"{r['arch']}" + (f"  x{r['scale']}" if "scale" in r else "")
        click.echo(f"{r['name']:<{width}}  {what}  [{r['location']}] {r['path']}")


def _cached_zoo_rows() -> list[dict[str, Any]]:
    """Zoo models already fetched into the cache (location "zoo"), as `weights list` rows."""
    from img2img.checkpoints.download import cached_path, is_cached
    from img2img.checkpoints.zoo import ZOO

    return [
        {"name": m.name, "location": "zoo", "path": str(cached_path(m)), "arch": m.arch, "scale": m.scale}
        for m in ZOO
        if is_cached(m)
    ]


def _list_zoo(as_json: bool) -> None:
    from dataclasses import asdict

    from img2img.checkpoints.download import cached_path, is_cached, recorded_hash, zoo_dir
    from img2img.checkpoints.zoo import ZOO
    from img2img.networks import registry

    rows = []
    for model in ZOO:
        row = asdict(model)
        row["cached"] = str(cached_path(model)) if is_cached(model) else None
        row["recorded_sha256"] = recorded_hash(model) if model.sha256 is None else None
        row["runnable"] = model.arch in registry.ARCHITECTURES
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [("NAME", "ARCH", "SCALE", "SIZE", "LICENCE", "SHA-256", "CACHED", "URL")]
    for row in rows:
        if row["sha256"]:
            digest = row["sha256"][:16] + "…"
        elif row["recorded_sha256"]:
            digest = row["recorded_sha256"][:16] + "… (recorded)"
        else:
            digest = "none published" + (f" (prefix {row['sha256_prefix']})" if row["sha256_prefix"] else "")
        table.append((
            row["name"],
            row["arch"] + ("" if row["runnable"] else " (not in this version)"),
            f"x{row['scale']}",
            f"{row['size'] / 1e6:.1f} MB" if row["size"] else "?",
            row["licence"],
            digest,
            "yes" if row["cached"] else "-",
            row["url"] or f"by hand: {row['page']}",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        click.echo("  ".join(f"{cell:<{w}}" for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    click.echo(
        f"\n{len(rows)} models; `img2img weights get NAME` downloads one into {zoo_dir()} "
        "(or --model NAME on first use); hashes: OpenModelDB or the publisher, else recorded at first download"
    )


@weights.command("get")
@click.argument("name")
@click.option(
    "--from", "source", default=None, metavar="URL_OR_FILE",
    help="Take the file from a mirror URL or a local copy instead (still verified).",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Fetch again even when the cache holds it.")
def get_command(name: str, source: str | None, force: bool) -> None:
    """Download zoo model NAME into the cache, verified (see `weights list --available`)."""
    from img2img.checkpoints import CheckpointError
    from img2img.checkpoints.download import ensure_zoo_file

    try:
        path = ensure_zoo_file(name, source=source, force=force)
    except CheckpointError as e:
        fail(str(e))
        return
    click.echo(str(path))


@weights.command("info")
@click.argument("source")
@_hint_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info_command(
    source: str, arch: str | None, scale: int | None, direction: str | None, as_json: bool
) -> None:
    """Describe the model SOURCE (bundled name, model file or run directory)."""
    from img2img.checkpoints import CheckpointError, load_model

    try:
        desc = load_model(source, arch=arch, scale=scale, direction=direction, device="cpu")
    except CheckpointError as e:
        fail(str(e))
        return
    summary = desc.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    kwargs = ", ".join(f"{k}={v}" for k, v in summary["kwargs"].items())
    lo, hi = summary["value_range"]
    lines = [
        ("file", summary["provenance"].get("file", source)),
        ("architecture", f"{summary['arch']}({kwargs})"),
        ("scale", f"x{summary['scale']}"),
        ("channels", f"{summary['in_channels']} -> {summary['out_channels']}"),
        ("value range", f"[{lo:g}, {hi:g}]"),
        ("size", f"multiple of {summary['size_multiple']}, at least {summary['min_size']} px"),
        ("instance norm", "yes (per-image statistics)" if summary["instance_norm"] else "no"),
        ("parameters", f"{summary['parameters']:,}"),
    ]
    lines += [(f"  {k}", str(v)) for k, v in summary["provenance"].items() if k != "file"]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key:<{width}}  {value}")


@weights.command("convert")
@click.argument("source")
@click.argument("out")
@_hint_options
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def convert_command(
    source: str, out: str, arch: str | None, scale: int | None, direction: str | None, overwrite: bool
) -> None:
    """Convert SOURCE (e.g. a reference .pth) to our OUT.safetensors with metadata."""
    from pathlib import Path

    from img2img.checkpoints import CheckpointError, convert

    if not out.endswith(".safetensors"):
        fail(f"{out}: the output must be a .safetensors file")
    if Path(out).exists() and not overwrite:
        fail(f"{out}: exists; pass --overwrite to replace it")
    args = [source, out] + [
        f"--{k}={v}" for k, v in (("arch", arch), ("scale", scale), ("direction", direction)) if v
    ]
    command = "img2img weights convert " + " ".join(shlex.quote(str(a)) for a in args)
    try:
        desc = convert(
            source, out, arch=arch, scale=scale, direction=direction, provenance={"command": command}
        )
    except CheckpointError as e:
        fail(str(e))
        return
    except OSError as e:  # a read-only folder, a full disk: save_model leaves no partial file
        fail(f"{out}: cannot write it ({e.strerror or e}); nothing was written")
        return
    click.echo(f"wrote {out}: {desc.arch} x{desc.scale}, value range {list(desc.value_range)}")
