"""Getting Singer messages onto stdout whole, and never waiting forever on a reader that left.

Two writers share stdout: the SDK's messages (SCHEMA, STATE) and the bulk copy of finished
partitions. Both go through :data:`STDOUT`, which

- writes with ``os.write`` and resumes after partial writes, because ``BufferedWriter.write``
  on a pipe drops bytes when a handled signal interrupts a partial ``write(2)``;
- writes whole lines only: copies go in chunks that end on a newline, and into a pipe each
  ``write(2)`` takes only as many whole lines as the pipe has room for, so it is never left
  half done and even SIGKILL leaves no cut line for the target;
- after a stop signal, stops at a line boundary once :data:`STOP_GRACE_SECONDS` are over. A
  pipe's reader that is still alive but no longer reads (Meltano, once it was told to stop,
  no longer forwards the tap's output) would otherwise keep the tap blocked in ``write(2)``
  forever. So a pipe or socket is written in non-blocking mode and waited for with ``poll``,
  which lets the tap look at the clock. Before any signal a slow reader is waited for as long
  as it takes: a target may pause for minutes to load a batch.

Non-blocking mode belongs to the open file, which stdout may share with stderr (``2>&1``) or
with the shell's next command. On Linux a pipe is therefore opened afresh through
``/proc/self/fd`` and only that private copy is made non-blocking; elsewhere (and for a
socket) stdout itself is, and is given back blocking when the tap exits.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import select
import shutil
import stat
import struct
import sys
import termios
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, NoReturn

from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib import Message, StateMessage

from tap_mixpanel_parallel.compat import override

COPY_CHUNK_BYTES = 1 << 20
#: After the first stop signal, the partition being copied may still finish (and its STATE
#: follow) within this time; then output stops at the next line boundary.
STOP_GRACE_SECONDS = 5.0
#: Once the grace is over, the line being written may take this long to finish. A reader that
#: accepts nothing for that long after a stop is taken as gone.
LINE_GRACE_SECONDS = 5.0
_POLL_SLICE_MS = 200
#: Asked of the kernel for stdout's pipe: fewer, larger writes (the usual limit for any user).
PIPE_BYTES = 1 << 20
#: Room kept free in a pipe's reckoning: a page the reader is part way through is not
#: reusable until it finishes it.
_PIPE_SLACK_BYTES = 4096
_ROOM_WAIT_SECONDS = 0.005


class StopWriting(Exception):
    """The run is stopping: nothing more goes to stdout, and what went out ends on a newline."""


class ReaderGone(StopWriting):
    """After a stop, stdout accepted nothing for :data:`LINE_GRACE_SECONDS`: nobody reads it."""


class Stdout:
    """The one way to stdout: whole writes, line-ending copies, a bounded stop."""

    def __init__(self) -> None:
        self.stop_deadline: float | None = None
        self.writing = False
        self._exit: Callable[[], NoReturn] | None = None
        self._fd: int | None = None
        self._out: int | None = None
        self._private = False
        self._made_nonblocking = False
        self._pipe_bytes: int | None = None

    def begin_stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """A stop signal came: writes go on for ``grace`` seconds, then end at a line."""
        if self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + grace

    def exit_at_line_end(self, exit_now: Callable[[], NoReturn]) -> None:
        """Call ``exit_now`` as soon as stdout is at a line boundary (now, if no write runs).

        Called from a signal handler: when it interrupted a write, that write finishes its
        line first.
        """
        self._exit = exit_now
        if not self.writing:
            exit_now()

    def restore(self) -> None:
        """Give stdout back as it was found (blocking), for whoever shares it after us."""
        if self._private and self._out is not None:
            with contextlib.suppress(OSError):
                os.close(self._out)
        elif self._made_nonblocking and self._fd is not None:
            with contextlib.suppress(OSError):
                os.set_blocking(self._fd, True)
        self._fd = self._out = None
        self._private = self._made_nonblocking = False

    def write(self, data: bytes | bytearray) -> None:
        """Write ``data`` (whole lines) to stdout; raises :class:`StopWriting` when stopping."""
        binary = _binary_stdout()
        if binary is None:
            sys.stdout.write(data.decode("utf-8"))
            sys.stdout.flush()
            return
        try:
            fd = binary.fileno()
        except (AttributeError, OSError, ValueError):
            binary.write(data)
            binary.flush()
            return
        self._write_fd(self._prepare(fd), data)

    def copy_file(self, path: Path) -> None:
        """Copy a finished partition's RECORD lines, in large chunks that end on a newline."""
        if _binary_stdout() is None:
            with open(path, encoding="utf-8") as fh:
                shutil.copyfileobj(fh, sys.stdout, COPY_CHUNK_BYTES)
            sys.stdout.flush()
            return
        carry = b""
        with open(path, "rb") as fh:
            while chunk := fh.read(COPY_CHUNK_BYTES):
                data = carry + chunk if carry else chunk
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    carry = data  # one line longer than a chunk: read on to its end
                    continue
                carry = data[cut:]
                self.write(data[:cut] if carry else data)
        if carry:
            self.write(carry)

    def _prepare(self, fd: int) -> int:
        """The descriptor to write ``fd``'s data to, made ready once per stdout."""
        if fd == self._fd and self._out is not None:
            return self._out
        self.restore()
        self._fd = self._out = fd
        mode = os.fstat(fd).st_mode
        # Regular files and terminals never block for long; a pipe or socket blocks as long
        # as its reader does not read.
        if stat.S_ISFIFO(mode):
            private = _reopen_nonblocking(fd)
            if private is not None:
                self._out, self._private = private, True
        if (
            not self._private
            and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode))
            and os.get_blocking(fd)
        ):
            os.set_blocking(fd, False)
            self._made_nonblocking = True
            atexit.register(self.restore)
        self._pipe_bytes = _pipe_capacity(self._out) if stat.S_ISFIFO(mode) else None
        return self._out

    def _piece_end(self, fd: int, data: bytes | bytearray, offset: int) -> int:
        """Where the next ``write(2)`` should end: whole lines that fit, or ``offset`` to wait."""
        if self._pipe_bytes is None:
            return len(data)
        room = self._pipe_bytes - _PIPE_SLACK_BYTES - _unread(fd)
        if room <= 0:
            return offset
        if len(data) - offset <= room:
            return len(data)
        cut = data.rfind(b"\n", offset, offset + room) + 1
        if cut > offset:
            return cut
        line_end = data.find(b"\n", offset) + 1 or len(data)
        if line_end - offset > self._pipe_bytes - _PIPE_SLACK_BYTES:
            return offset + room  # a line longer than the pipe can only go in pieces
        return offset

    def _stopping_now(self) -> bool:
        return self._exit is not None or (
            self.stop_deadline is not None and time.monotonic() >= self.stop_deadline
        )

    def _write_fd(self, fd: int, data: bytes | bytearray) -> None:
        if self._stopping_now():
            self._stop()
        offset = 0
        self.writing = True
        try:
            while offset < len(data):
                if self._stopping_now():
                    if self._finish_line(fd, data, offset) < len(data):
                        self._stop()
                    break
                end = self._piece_end(fd, data, offset)
                if end == offset:
                    _wait_writable(fd, _POLL_SLICE_MS)
                    time.sleep(_ROOM_WAIT_SECONDS)  # room for a slot is not room for a line
                    continue
                try:
                    offset += os.write(fd, memoryview(data)[offset:end])
                except BlockingIOError:
                    _wait_writable(fd, _POLL_SLICE_MS)
        finally:
            self.writing = False
        if self._exit is not None:
            self._exit()

    def _stop(self) -> NoReturn:
        if self._exit is not None:
            self._exit()
        raise StopWriting

    def _finish_line(self, fd: int, data: bytes | bytearray, offset: int) -> int:
        """Write the rest of the line ``offset`` is in, unless it sits at a line start."""
        if offset == 0 or data[offset - 1] == ord("\n"):
            return offset
        end = data.find(b"\n", offset) + 1 or len(data)
        deadline = time.monotonic() + LINE_GRACE_SECONDS
        while offset < end:
            try:
                offset += os.write(fd, memoryview(data)[offset:end])
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReaderGone from None
                _wait_writable(fd, min(_POLL_SLICE_MS, int(left * 1000) + 1))
        return offset


STDOUT = Stdout()


def _reopen_nonblocking(fd: int) -> int | None:
    """A private, non-blocking descriptor on the same pipe (Linux), or None."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None


def _pipe_capacity(fd: int) -> int | None:
    """The pipe's size, raised to :data:`PIPE_BYTES` when the kernel allows it."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    get_size = getattr(fcntl, "F_GETPIPE_SZ", None)
    if set_size is None or get_size is None:
        return None  # not Linux: plain writes
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, set_size, PIPE_BYTES)
    try:
        return int(fcntl.fcntl(fd, get_size))
    except OSError:
        return None


def _unread(fd: int) -> int:
    """Bytes written to the pipe and not yet read."""
    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


def _wait_writable(fd: int, timeout_ms: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll(timeout_ms)


def _binary_stdout() -> IO[bytes] | None:
    """The flushed binary stdout, or None when stdout is text only (the SDK's test runner
    captures output in a ``StringIO``, which has no buffer)."""
    out = sys.stdout
    out.flush()
    binary: IO[bytes] | None = getattr(out, "buffer", None)
    if binary is not None:
        binary.flush()
    return binary


class StdoutWriter(MsgSpecWriter):
    """msgspec encoding for the SDK's own messages, written whole into the current stdout."""

    #: What a STATE message says of the tap's state (the tap's own view of it), if set.
    state_view: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None

    @override
    def write_message(self, message: Message) -> None:
        """Write one message line at once, so STATE is never stuck in a buffer."""
        if isinstance(message, StateMessage) and self.state_view is not None:
            message = StateMessage(value=self.state_view(message.value))
        STDOUT.write(self.format_message(message))
