"""Checking, before anything starts, that the ports a command will listen on are free.

Without it a taken port shows up late and half-way: ``idgraph up`` printed the API address
and a token, then the API child logged ``address already in use`` and the stack ran without
it. A command now names every taken port and the option that moves it, and starts nothing.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


class PortTaken(RuntimeError):
    """One or more ports a command needs are in use; the message names each and how to move it."""


@dataclass(frozen=True)
class Listener:
    """A port a command will listen on: what listens there and the option that changes it."""

    what: str
    host: str
    port: int
    option: str


def in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (or on every interface at that port).

    SO_REUSEADDR as the servers themselves set it: a closed connection in TIME_WAIT is not
    a taken port, only a listening socket is.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def require_free(listeners: list[Listener]) -> None:
    """Raise :class:`PortTaken` naming every listener whose port is in use; port 0 means none."""
    taken = [entry for entry in listeners if entry.port and in_use(entry.host, entry.port)]
    if taken:
        raise PortTaken("; ".join(
            f"port {entry.port} ({entry.what}) is already in use on {entry.host}: stop what holds it "
            f"or choose another with {entry.option}" for entry in taken))
