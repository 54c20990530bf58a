"""The tracking server's health check, before a run starts anything: every way a server can fail to answer is
a RegistryError naming the server (exit 1 with a sentence), never an exception that escapes as a bug
(exit 70).

The servers here are sockets on 127.0.0.1 in a thread of this process, each answering in one broken way: a
port nobody listens on, a server killed while it answers (fewer bytes than it promised), another program on
the port (no HTTP at all), and one that never answers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager

import pytest

from runner.production.registry import RegistryError, check_reachable

pytestmark = pytest.mark.unit


@contextmanager
def answering(reply: Callable[[socket.socket], None]) -> Iterator[str]:
    """A server on 127.0.0.1 that reads one request and `reply`s to it; its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        with closing(listener):
            listener.settimeout(5)
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with closing(connection):
                connection.recv(4096)
                reply(connection)
                done.wait(5)  # hold the connection open until the client gave up (for the silent server)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        thread.join(10)


def cut_short(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nOK")
    connection.shutdown(socket.SHUT_RDWR)  # the server dies before the rest: the client reads IncompleteRead


def not_http(connection: socket.socket) -> None:
    connection.sendall(b"\x00\x01 a ZeroMQ peer, not an HTTP server\r\n\r\n")


def silent(connection: socket.socket) -> None:
    pass


@pytest.mark.parametrize(
    "reply", [cut_short, not_http, silent], ids=["killed while answering", "not HTTP", "silent"]
)
def test_a_server_that_answers_badly_is_unreachable_by_name(reply: Callable[[socket.socket], None]) -> None:
    with answering(reply) as url, pytest.raises(RegistryError) as raised:
        check_reachable(url, timeout_s=0.5)
    assert f"MLflow tracking server {url} is unreachable" in str(raised.value)


def test_a_port_nobody_listens_on_is_unreachable_by_name() -> None:
    with closing(socket.create_server(("127.0.0.1", 0))) as taken:
        url = f"http://127.0.0.1:{taken.getsockname()[1]}"
    with pytest.raises(RegistryError, match="is unreachable"):
        check_reachable(url, timeout_s=0.5)


def test_a_healthy_server_passes() -> None:
    def ok(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")

    with answering(ok) as url:
        check_reachable(url, timeout_s=2)
