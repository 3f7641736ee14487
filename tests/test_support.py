"""The test fixtures themselves, where two xdist workers (or anything else on the machine)
could meet: a registry never answers for another process's port."""

from __future__ import annotations

import socket

import pytest

from support.registry import Registry, can_run, listens


def test_a_registry_on_a_port_taken_meanwhile_moves_to_another() -> None:
    """The port ``Registry`` picked is taken before it starts (by another worker's registry,
    say): it must not take the other listener for itself, but start on another port."""
    why = can_run()
    if why:
        pytest.skip(why)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        reg = Registry()
        reg.port = port
        with reg:
            assert reg.port != port
            assert reg._proc is not None and listens(reg._proc.pid, reg.port)
            with socket.create_connection(("127.0.0.1", reg.port), timeout=5):
                pass
