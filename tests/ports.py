"""Free loopback ports for services a test starts itself."""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports: all sockets stay bound until every port is picked (closing one before
    asking for the next can hand the same port back twice: a broker and its controller then collide)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]
