#!/usr/bin/env python3
"""Download a standard dataset into datasets/ (or --dir): resumable, checksummed, extracted.

    python datasets/download.py --list
    python datasets/download.py facades            # -> datasets/facades/{train,val,test}/*.jpg
    python datasets/download.py horse2zebra        # -> datasets/horse2zebra/{trainA,trainB,testA,testB}
    python datasets/download.py div2k              # -> datasets/DIV2K_train_HR, datasets/DIV2K_valid_HR
    python datasets/download.py sr-benchmark       # -> datasets/benchmark/{Set5,Set14,B100,Urban100}

Standard library only, so it runs before img2img is installed. An interrupted download resumes
from its ``.part`` file (HTTP Range). Checksums: where a digest is recorded below the archive is
verified; where none is known the script prints the computed sha256 instead of pretending.
Offline, it says which host it could not reach and where to put a file fetched by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
TIMEOUT_S = 30


@dataclass(frozen=True)
class Archive:
    """One file to fetch: mirror URLs in order, and a digest when one is known ("md5:..."/"sha256:...")."""

    name: str
    urls: tuple[str, ...]
    digest: str | None = None
    digest_source: str = ""


@dataclass(frozen=True)
class Dataset:
    description: str
    archives: tuple[Archive, ...]
    layout: str


PIX2PIX = (
    "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{}.tar.gz"  # junyanz/pytorch-CycleGAN-and-pix2pix
)
CYCLEGAN = (
    "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{}.zip",
    "https://people.eecs.berkeley.edu/~taesung_park/CycleGAN/datasets/{}.zip",  # the older address
)
DIV2K = "http://data.vision.ee.ethz.ch/cvl/DIV2K/{}"
TORCHSR = "the torchSR package (Coloquinte/torchSR, datasets/div2k.py and benchmarks.py); not verified by us"


def _pix2pix(name: str, description: str) -> Dataset:
    return Dataset(
        description,
        (Archive(f"{name}.tar.gz", (PIX2PIX.format(name),)),),
        f"{name}/{{train,val,test}}/*.jpg (A|B)",
    )


def _cyclegan(name: str, description: str) -> Dataset:
    return Dataset(
        description,
        (Archive(f"{name}.zip", tuple(u.format(name) for u in CYCLEGAN)),),
        f"{name}/{{trainA,trainB,testA,testB}}/*.jpg",
    )


CATALOGUE: dict[str, Dataset] = {
    "facades": _pix2pix(
        "facades", "pix2pix: CMP facade photos | label maps, 256x256 per side (train BtoA: labels -> photo)"
    ),
    "maps": _pix2pix("maps", "pix2pix: aerial photos | Google Maps tiles, 600x600 per side"),
    "edges2shoes": _pix2pix(
        "edges2shoes", "pix2pix: edge maps | shoe photos (UT Zappos50K), 256x256 per side, large"
    ),
    "edges2handbags": _pix2pix(
        "edges2handbags", "pix2pix: edge maps | handbag photos, 256x256 per side, very large"
    ),
    "night2day": _pix2pix("night2day", "pix2pix: night | day webcam pairs"),
    "horse2zebra": _cyclegan(
        "horse2zebra", "CycleGAN: horse (A) and zebra (B) photos from ImageNet, 256x256"
    ),
    "monet2photo": _cyclegan(
        "monet2photo", "CycleGAN: Monet paintings (A) and landscape photos (B), 256x256"
    ),
    "div2k": Dataset(
        "DIV2K: 800 train + 100 validation 2K photos (HR; LR made on the fly), large",
        (
            Archive(
                "DIV2K_train_HR.zip",
                (DIV2K.format("DIV2K_train_HR.zip"),),
                "md5:bdc2d9338d4e574fe81bf7d158758658",
                TORCHSR,
            ),
            Archive(
                "DIV2K_valid_HR.zip",
                (DIV2K.format("DIV2K_valid_HR.zip"),),
                "md5:9fcdda83005c5e5997799b69f955ff88",
                TORCHSR,
            ),
        ),
        "DIV2K_train_HR/*.png, DIV2K_valid_HR/*.png",
    ),
    "div2k-lr-x4": Dataset(
        "DIV2K bicubic x4 LR images (MATLAB imresize) for the 800 + 100 HR images",
        (
            Archive(
                "DIV2K_train_LR_bicubic_X4.zip",
                (DIV2K.format("DIV2K_train_LR_bicubic_X4.zip"),),
                "md5:76c43ec4155851901ebbe8339846d93d",
                TORCHSR,
            ),
            Archive(
                "DIV2K_valid_LR_bicubic_X4.zip",
                (DIV2K.format("DIV2K_valid_LR_bicubic_X4.zip"),),
                "md5:21962de700c8d368c6ff83314480eff0",
                TORCHSR,
            ),
        ),
        "DIV2K_{train,valid}_LR_bicubic/X4/NNNNx4.png (use as lr_dir; the x4 stem suffix is matched)",
    ),
    "sr-benchmark": Dataset(
        "Set5, Set14, B100, Urban100 (HR and bicubic LR x2/x3/x4), the EDSR authors' bundle",
        (
            Archive(
                "benchmark.tar",
                ("https://cv.snu.ac.kr/research/EDSR/benchmark.tar",),
                "md5:4ace41d33c2384b97e6b320cd0afd6ba",
                TORCHSR,
            ),
        ),
        "benchmark/{Set5,Set14,B100,Urban100}/HR/*.png and LR_bicubic/X{2,3,4}/*x{2,3,4}.png",
    ),
}


class DownloadError(Exception):
    """A download or check failed; the message is one line saying what to do."""


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, target: Path, *, timeout: float = TIMEOUT_S, log=print) -> Path:
    """Download ``url`` to ``target``, resuming from ``target.part`` when the server allows ranges.

    Returns ``target``. Raises DownloadError (unreachable host, HTTP error) naming the URL.
    """
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "img2img-datasets"})
    if have and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the .part file is already whole
            part.replace(target)
            return target
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        host = urllib.parse.urlsplit(url).netloc or url
        raise DownloadError(f"cannot reach {host} ({reason}); are you offline?") from None
    with response:
        status = getattr(response, "status", 200)
        resumed = have and status == 206
        if have and not resumed:
            log(f"{target.name}: the server does not resume; starting again")
        mode = "ab" if resumed else "wb"
        total = response.headers.get("Content-Length")
        log(
            f"{'resuming' if resumed else 'fetching'} {url}"
            + (f" ({int(total) + (have if resumed else 0)} bytes)" if total else "")
        )
        try:
            with open(part, mode) as f:
                shutil.copyfileobj(response, f, CHUNK)
        except OSError as e:
            raise DownloadError(f"{url}: interrupted ({e}); rerun to resume from {part.name}") from None
    part.replace(target)
    return target


def verify(path: Path, archive: Archive, *, log=print) -> None:
    """Check ``path`` against the archive's digest, or print its sha256 when none is recorded."""
    if archive.digest is None:
        log(
            f"{path.name}: checksum unknown; sha256 {file_digest(path, 'sha256')} (record it in datasets/download.py)"
        )
        return
    algorithm, expected = archive.digest.split(":", 1)
    actual = file_digest(path, algorithm)
    if actual != expected:
        bad = path.with_name(path.name + ".bad")
        path.replace(bad)
        raise DownloadError(
            f"{path.name}: {algorithm} {actual} does not match the expected {expected}; moved to {bad.name}, rerun to fetch again"
        )
    log(f"{path.name}: {algorithm} ok")


def _safe_members(names: list[str], dest: Path) -> None:
    root = dest.resolve()
    for name in names:
        target = (dest / name).resolve()
        if target != root and root not in target.parents:
            raise DownloadError(f"archive member {name!r} would land outside {dest}; refusing to extract")


def extract(path: Path, dest: Path) -> None:
    """Unpack a .zip, .tar, .tar.gz or .tgz into ``dest`` (members checked to stay inside it)."""
    dest.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            _safe_members(z.namelist(), dest)
            z.extractall(dest)
        return
    if path.name.endswith((".tar", ".tar.gz", ".tgz")):
        with tarfile.open(path) as t:
            members = t.getmembers()
            _safe_members([m.name for m in members], dest)
            if any(m.issym() or m.islnk() or m.isdev() for m in members):
                raise DownloadError(f"{path.name}: holds links or device files; refusing to extract")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: the stdlib's own safety filter too
                t.extractall(dest, filter="data")
            else:
                t.extractall(dest)
        return
    raise DownloadError(f"{path.name}: unknown archive type")


def download(
    name: str,
    out_dir: Path,
    *,
    url: str | None = None,
    digest: str | None = None,
    keep: bool = False,
    log=print,
) -> None:
    """Fetch, verify and extract every archive of dataset ``name`` into ``out_dir``.

    ``url``/``digest`` replace the first archive's mirrors/digest (a mirror or a file fetched by hand:
    ``file:///path/to/facades.tar.gz``). An archive already extracted (marker file) is skipped.
    """
    if name not in CATALOGUE:
        raise DownloadError(f"unknown dataset '{name}'; --list shows the names")
    dataset = CATALOGUE[name]
    cache = out_dir / ".downloads"
    for i, archive in enumerate(dataset.archives):
        if i == 0 and (url or digest):
            archive = Archive(
                archive.name, (url,) if url else archive.urls, digest or archive.digest, "command line"
            )
        marker = cache / f"{archive.name}.extracted"
        if marker.exists():
            log(f"{archive.name}: already extracted into {out_dir}")
            continue
        target = cache / archive.name
        if not target.exists():
            errors = []
            for candidate in archive.urls:
                try:
                    fetch(candidate, target, log=log)
                    break
                except DownloadError as e:
                    errors.append(str(e))
            else:
                raise DownloadError(
                    f"{archive.name}: {'; '.join(errors)} - fetch it by hand from {archive.urls[0]} "
                    f"into {target} and rerun"
                )
        verify(target, archive, log=log)
        log(f"{archive.name}: extracting into {out_dir}")
        extract(target, out_dir)
        marker.touch()
        if not keep:
            target.unlink()
    log(f"{name}: done; layout {dataset.layout}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help="dataset name (see --list)")
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent, help="where datasets go")
    parser.add_argument(
        "--url", help="fetch the (first) archive from this URL instead (a mirror, file://...)"
    )
    parser.add_argument("--checksum", help="expected digest of that archive, md5:HEX or sha256:HEX")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive")
    parser.add_argument("--list", action="store_true", help="list the datasets")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        for key, ds in CATALOGUE.items():
            print(f"{key:15s} {ds.description}")
        return 0 if args.list else 2
    if args.checksum and ":" not in args.checksum:
        print("error: --checksum takes md5:HEX or sha256:HEX", file=sys.stderr)
        return 2
    try:
        download(args.name, args.dir, url=args.url, digest=args.checksum, keep=args.keep_archive)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
