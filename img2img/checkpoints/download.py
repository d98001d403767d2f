"""Zoo files into the cache: download (resumable), verify, rename into place.

``ensure_zoo_file(name)`` returns the verified file of zoo model ``name`` in
``cache_dir() / "zoo"``, downloading it first when it is not there. The rules:

- **Download** with urllib (standard library) to ``.<file>.part`` beside the final name; an
  interrupted download resumes from the part file with an HTTP ``Range`` request (a server that
  ignores it sends the whole file and we start over). Progress is a tqdm bar on a terminal.
- **Verify** before the final name exists: the published size, then the SHA-256 (or, for
  BasicSR files, the hash prefix in the file name). A mismatch is refused and the part file is
  removed, so a bad download is never used and never resumed.
- **Trust on first use** for files nobody publishes a hash for: the first verified copy's
  SHA-256 is recorded as ``<file>.sha256`` in the cache and required of every later copy.
- **Rename** (``os.replace``) into place: the final name only ever holds a verified file.
- **Offline**: one line naming the URL, the page, and the two ways to finish by hand
  (``img2img weights get NAME --from FILE``, or the path to copy the file to).
- ``source`` (``--from``) is a mirror URL or a local file: the same checks apply.

A file already in the cache is checked again (size and hash) each time it is resolved, so a file
copied there by hand, or damaged since, is caught before it is loaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from img2img.checkpoints import filekind
from img2img.checkpoints.bundled import cache_dir
from img2img.checkpoints.errors import CheckpointError
from img2img.checkpoints.zoo import ZooModel, get_zoo

CHUNK = 1 << 20
TIMEOUT_S = 30
USER_AGENT = "img2img-zoo"

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def zoo_dir() -> Path:
    """Where zoo files live: ``cache_dir() / "zoo"``."""
    return cache_dir() / "zoo"


def cached_path(model: ZooModel) -> Path:
    return zoo_dir() / model.file


def recorded_hash_path(model: ZooModel) -> Path:
    return zoo_dir() / f"{model.file}.sha256"


def recorded_hash(model: ZooModel) -> str | None:
    """The SHA-256 recorded at first download, for a model without a published one."""
    path = recorded_hash_path(model)
    if not path.is_file():
        return None
    text = path.read_text(encoding="ascii", errors="replace").split()
    return text[0].lower() if text else None


def is_cached(model: ZooModel) -> bool:
    return cached_path(model).is_file()


def ensure_zoo_file(
    name: str, *, source: str | None = None, force: bool = False, log: Log = _stderr
) -> Path:
    """The verified cache file of zoo model ``name``, downloading it when needed.

    Args:
        name: a zoo name (``img2img.checkpoints.zoo``).
        source: a mirror URL or a local file to take the file from instead of the zoo's URL.
        force: fetch again even when the cache holds the file.
        log: where one-line announcements go (stderr by default).

    Raises CheckpointError (one line) when the file cannot be fetched or fails verification.
    """
    model = get_zoo(name)
    target = cached_path(model)
    if target.is_file() and source is None and not force:
        verify(target, model, log=log, outcome=f"delete it or run: img2img weights get {model.name} --force")
        return target
    if source is None and model.url is None:
        raise CheckpointError(
            f"{model.name}: {model.file} has no direct download; get it by hand from {model.page}, "
            f"then run: img2img weights get {model.name} --from FILE"
        )
    origin = source or model.url
    assert origin is not None
    try:
        zoo_dir().mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{zoo_dir()}: cannot create the model cache ({e.strerror or e})") from None
    if not os.access(zoo_dir(), os.W_OK):
        raise CheckpointError(
            f"{zoo_dir()}: the model cache is not writable; set IMG2IMG_CACHE_DIR to a folder you can write"
        )
    part = target.with_name(f".{target.name}.part")
    local = _local_file(origin)
    if local is not None:
        log(f"{model.name}: copying {local} into {target}")
        _copy(local, part)
    else:
        _download(origin, part, model, log=log)
    try:
        verify(part, model, log=log, shown_as=origin)
    except CheckpointError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    log(f"{model.name}: verified, saved as {target}")
    return target


def verify(
    path: Path,
    model: ZooModel,
    *,
    log: Log = _stderr,
    shown_as: str | None = None,
    outcome: str = "it was not kept",
) -> str:
    """Check ``path`` against ``model`` (kind, size, SHA-256 or its prefix); record the hash on
    first use when none is published. Returns the SHA-256. Raises CheckpointError on a mismatch,
    ending with ``outcome`` (what happens to the file, or what to do)."""
    where = shown_as or str(path)
    what = filekind.describe(filekind.read_head(path))
    if what is not None:
        raise CheckpointError(
            f"{model.name}: {where} is {what}, not the model file {model.file}; {outcome}"
        )
    size = path.stat().st_size
    if model.size is not None and size != model.size:
        raise CheckpointError(
            f"{model.name}: {where} has {size:,} bytes, but {model.file} has {model.size:,} "
            f"({model.hash_source}); {outcome}"
        )
    digest = sha256_file(path)
    expected, said_by = model.sha256, model.hash_source
    if expected is None and (recorded := recorded_hash(model)) is not None:
        expected, said_by = recorded, f"recorded at its first download in {recorded_hash_path(model)}"
    if expected is not None and digest != expected.lower():
        raise CheckpointError(
            f"{model.name}: refused {where}: its SHA-256 is {digest}, but {model.file} has {expected} "
            f"({said_by}); {outcome}"
        )
    if model.sha256_prefix and not digest.startswith(model.sha256_prefix):
        raise CheckpointError(
            f"{model.name}: refused {where}: its SHA-256 {digest} does not start with "
            f"{model.sha256_prefix}, the prefix in the publisher's file name; {outcome}"
        )
    if expected is None:
        _record_hash(model, digest)
        log(
            f"{model.name}: no published SHA-256; recorded {digest} (trust on first use: later copies "
            f"must match it)"
        )
    return digest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def offline_message(model: ZooModel, url: str, reason: str) -> str:
    return (
        f"{model.name}: cannot download {url} ({reason}); are you offline? Download it by hand "
        f"(from {url} or {model.page}), then run: img2img weights get {model.name} --from FILE "
        f"(or copy it to {cached_path(model)}; it is verified either way)"
    )


def _record_hash(model: ZooModel, digest: str) -> None:
    path = recorded_hash_path(model)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{digest}  {model.file}\n", encoding="ascii")
    os.replace(tmp, path)


def _local_file(origin: str) -> Path | None:
    """``origin`` as a local path (a plain path or a file:// URL), or None for a remote URL."""
    parsed = urllib.parse.urlsplit(origin)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https", "ftp"):
        return None
    return Path(origin).expanduser()


def _copy(source: Path, part: Path) -> None:
    if not source.is_file():
        raise CheckpointError(f"{source}: no such file")
    try:
        with source.open("rb") as src, part.open("wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise CheckpointError(f"{part}: cannot copy {source} into the cache ({e.strerror or e})") from None


def _download(url: str, part: Path, model: ZooModel, *, log: Log) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size when the server allows it."""
    have = part.stat().st_size if part.exists() else 0
    if model.size is not None and have > model.size:  # not a prefix of the right file
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part file is already whole
            return
        raise CheckpointError(offline_message(model, url, f"HTTP {e.code} {e.reason}")) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise CheckpointError(offline_message(model, url, str(reason))) from None
    with response:
        resumed = have > 0 and getattr(response, "status", 200) == 206
        if have and not resumed:
            log(f"{model.name}: the server does not resume downloads; starting again")
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else model.size
        log(
            f"{model.name}: {'resuming' if resumed else 'downloading'} {url}"
            + (f" ({total / 1e6:.1f} MB)" if total else "")
            + f" into {part.parent}"
        )
        try:
            with part.open("ab" if resumed else "wb") as f, _progress(total, have, model.name) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
        except OSError as e:  # connection dropped, disk full: keep the part file to resume
            raise CheckpointError(
                f"{model.name}: download of {url} interrupted ({e.strerror or e}); run the same "
                f"command again to resume from {part.stat().st_size if part.exists() else 0:,} bytes"
            ) from None


def _progress(total: int | None, initial: int, name: str):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in a pipe or a log file
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=name, file=sys.stderr,
                disable=None, leave=False)  # fmt: skip
