"""Getting Singer messages onto stdout whole.

Two writers share stdout: the SDK's messages (SCHEMA, STATE) and the bulk copy of finished
partitions. Both go through :func:`write_all`, because ``BufferedWriter.write`` on a pipe
drops bytes when a handled signal (SIGTERM, SIGINT) interrupts a partial ``write(2)``: a
RECORD line would be cut and the next message glued to it, exactly when the tap is stopping
and its last STATE matters most.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import IO

from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib import Message

from tap_mixpanel_parallel.compat import override

COPY_CHUNK_BYTES = 1 << 20


def write_all(binary: IO[bytes], data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` whole, resuming after partial writes; ``binary`` must be flushed."""
    try:
        fd = binary.fileno()
    except (AttributeError, OSError, ValueError):
        binary.write(data)
        binary.flush()
        return
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _binary_stdout() -> IO[bytes] | None:
    """The flushed binary stdout, or None when stdout is text only (the SDK's test runner
    captures output in a ``StringIO``, which has no buffer)."""
    out = sys.stdout
    out.flush()
    binary: IO[bytes] | None = getattr(out, "buffer", None)
    if binary is not None:
        binary.flush()
    return binary


def copy_file_to_stdout(path: Path) -> None:
    """Copy a finished partition's RECORD lines to stdout in large chunks."""
    binary = _binary_stdout()
    if binary is None:
        with open(path, encoding="utf-8") as fh:
            shutil.copyfileobj(fh, sys.stdout, COPY_CHUNK_BYTES)
        sys.stdout.flush()
        return
    with open(path, "rb") as fh:
        while chunk := fh.read(COPY_CHUNK_BYTES):
            write_all(binary, chunk)


class StdoutWriter(MsgSpecWriter):
    """msgspec encoding for the SDK's own messages, written whole into the current stdout."""

    @override
    def write_message(self, message: Message) -> None:
        """Write one message line at once, so STATE is never stuck in a buffer."""
        data = self.format_message(message)
        binary = _binary_stdout()
        if binary is None:
            sys.stdout.write(data.decode("utf-8"))
            sys.stdout.flush()
        else:
            write_all(binary, data)
