"""The stdout writer after a stop, against real sockets and pipes (in-process, no CLI)."""

from __future__ import annotations

import io
import os
import socket
import sys
import threading

import pytest

from tap_mixpanel_parallel import output
from tap_mixpanel_parallel.output import ReaderGone, Stdout, StopWriting

LINES = b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"x" * (i % 300)) for i in range(20000))


@pytest.fixture
def stdout_to(monkeypatch):
    """Point sys.stdout at ``fd`` for the writer under test."""

    def point(fd: int) -> None:
        raw = io.FileIO(fd, "w", closefd=False)
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BufferedWriter(raw)))

    return point


def read_all(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(65536):
        into.extend(chunk)


def test_a_reader_that_never_reads_again_after_a_stop_is_given_up(stdout_to, monkeypatch):
    monkeypatch.setattr(output, "LINE_GRACE_SECONDS", 0.5)
    writer_end, reader_end = socket.socketpair()
    writer_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stdout_to(writer_end.fileno())
    out = Stdout()
    out.begin_stop(grace=0.2)
    # a socket takes what fits, mid-line; then nobody reads: the line cannot be finished
    with pytest.raises(ReaderGone):
        out.write(LINES)
    out.restore()
    assert os.get_blocking(writer_end.fileno())
    writer_end.close()
    reader_end.close()


def test_after_the_grace_the_line_being_written_is_finished_then_output_stops(stdout_to):
    writer_end, reader_end = socket.socketpair()
    writer_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stdout_to(writer_end.fileno())
    out = Stdout()
    out.begin_stop(grace=0.2)
    received = bytearray()
    reader = threading.Timer(0.5, read_all, (reader_end, received))
    reader.start()  # the reader comes back only after the grace
    with pytest.raises(StopWriting) as caught:
        out.write(LINES)
    assert not isinstance(caught.value, ReaderGone)
    with pytest.raises(StopWriting):
        out.write(b'{"after":"the grace"}\n')  # nothing new starts once the grace is over
    out.restore()
    writer_end.close()
    reader.join(10)
    assert received.endswith(b"\n"), "output stopped in the middle of a line"
    assert 0 < len(received) < len(LINES)
    assert LINES.startswith(bytes(received))


def test_a_same_signal_twice_exits_after_the_line_being_written(stdout_to):
    read_fd, write_fd = os.pipe()
    stdout_to(write_fd)
    out = Stdout()
    exits: list[int] = []

    class Exited(BaseException):
        pass

    def exit_now():
        exits.append(1)
        raise Exited

    # the writer blocks on a full pipe; "the signal" comes from another thread here
    threading.Timer(0.3, out.exit_at_line_end, (exit_now,)).start()
    with pytest.raises(Exited):
        out.write(LINES)
    out.restore()
    os.close(write_fd)
    received = b""
    while chunk := os.read(read_fd, 1 << 20):
        received += chunk
    os.close(read_fd)
    assert exits == [1]
    assert received.endswith(b"\n")
    assert 0 < len(received) < len(LINES)
