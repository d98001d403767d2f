"""Writing a file whole or not at all: write under a hidden temporary name beside it, then rename.

A leaf module (standard library only) shared by everything that writes files: images
(``image_io``), model files and ONNX exports (``checkpoints``), training checkpoints and configs
(``training``). A reader never sees a half-written file under the final name; a killed run leaves
at most a temporary file that ``remove_stale_temporaries`` recognises by its name.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

# ".NAME.1234abcd.tmp": hidden, beside the output, recognisable (``remove_stale_temporaries``).
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
_NAME_MAX = 255  # bytes in one file name on the common file systems (ext4, XFS, APFS, NTFS in UTF-16 units)


def temporary_name(name: str) -> str:
    """A fresh hidden temporary name for writing ``name``, never longer than ``name`` may be
    (the output's name is shortened inside it, not the 14 bytes that make it ours)."""
    tag = f".{secrets.token_hex(4)}.tmp"
    room = _NAME_MAX - 1 - len(tag)
    encoded = os.fsencode(name)
    if len(encoded) > room:
        name = os.fsdecode(encoded[:room].decode("utf-8", "ignore").encode("utf-8"))
    return f".{name}{tag}"


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a new, empty temporary file beside ``path`` to write; when the block ends it is
    flushed to disk (``fsync``) and renamed onto ``path``; if the block raises, it is removed.

    The file is created with mode 0o666 less the umask, like any new file (``tempfile.mkstemp``
    would give 0o600 and make shared models private). OSError (no folder, permission, full disk)
    propagates to the caller, which names the file in its own error type.
    """
    path = Path(path)
    while True:
        tmp = path.with_name(temporary_name(path.name))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    os.close(fd)
    try:
        mode = os.stat(tmp).st_mode & 0o777  # what the umask allowed
        yield tmp
        # A writer that replaces the file it is given (safetensors does, as 0o600) gets the mode back.
        os.chmod(tmp, mode)
        if fsync:
            with open(tmp, "r+b") as f:
                os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike[str], *, older_than: float = 600.0) -> list[Path]:
    """Delete our temporary files (``temporary_name``) in ``folder`` untouched for ``older_than``
    seconds: left by a killed run. Younger ones may belong to a run writing there now. Returns them."""
    removed = []
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            if _TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
        except OSError:
            continue  # gone already, or not ours to remove
    return removed
