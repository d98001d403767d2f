"""Native codec messages: what libpng, libjpeg or OpenCV print on the process's stderr while
decoding or encoding is caught, to become a Python warning naming the file (when the call
succeeded: a damaged but readable file) or nothing (when it failed: our own error names the file
and the reason).

C code writes to file descriptor 2 directly, past ``sys.stderr``, so a damaged ancillary PNG chunk
would put ``libpng warning: tEXt: CRC error`` on the user's terminal with no file name. Around each
OpenCV codec call, descriptor 2 points at a temporary file; afterwards the codec's lines become
warnings and anything else written there meanwhile (another thread's output) is passed on to the
real stderr unchanged, so nothing is lost. One call at a time holds the redirection (a lock):
descriptor 2 is process-wide.

    with native_messages() as messages:
        decoded = cv2.imdecode(...)
    if decoded is not None:
        warn_each(path, messages)
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

_LOCK = threading.Lock()
_CODEC_PREFIXES = ("libpng ", "libjpeg", "libtiff", "libwebp", "[ WARN:", "[ERROR:", "Corrupt JPEG", "Premature end")


@contextlib.contextmanager
def native_messages() -> Iterator[list[str]]:
    """Run the block with native stderr captured; the yielded list receives the codec's lines."""
    messages: list[str] = []
    with _LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable descriptor 2 (e.g. a GUI process)
            yield messages
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield messages
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text = capture.read().decode("utf-8", "replace")
                others = []
                for line in text.splitlines(keepends=True):
                    if line.strip().startswith(_CODEC_PREFIXES):
                        messages.append(line.strip())
                    else:
                        others.append(line)
                if others:
                    os.write(2, "".join(others).encode("utf-8", "replace"))


def warn_each(path: Path, messages: list[str]) -> None:
    """One ``UserWarning`` per codec line, naming the file."""
    for message in messages:
        warnings.warn(f"{path}: {message}", stacklevel=3)
