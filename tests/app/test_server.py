"""app/server.py's view of a listening socket's accept queue, which it lets empty before closing it
(the kernel resets the connections queued there, after their clients may have sent a request)."""

from __future__ import annotations

import socket
import sys

import pytest

from app.server import waiting_to_be_accepted


@pytest.mark.skipif(sys.platform != "linux", reason="Linux reports the accept queue in TCP_INFO")
def test_connections_waiting_in_the_accept_queue_are_counted() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert waiting_to_be_accepted([listener]) == 0
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            assert waiting_to_be_accepted([listener]) == 2
            accepted, _ = listener.accept()
            accepted.close()
            assert waiting_to_be_accepted([listener]) == 1
        finally:
            for client in clients:
                client.close()


def test_a_socket_that_is_not_listening_on_tcp_counts_nothing() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        assert waiting_to_be_accepted([unix]) == 0
