"""Network failures said in words, and not retried when trying again cannot help: a refused
connection to this machine, a name that does not resolve, an untrusted certificate. In
process (a real refused socket, and an injected transport for the rest), plus one CLI line."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest

from ocikit.transports import registry_client as rc
from ocikit.transports.httpstream import connection_failure
from ocikit.transports.registry_client import RegistryClient, RegistryError
from support.cli import ocikit


def _refused_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_local_connection_is_said_and_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(rc.time, "sleep", slept.append)
    port = _refused_port()
    client = RegistryClient(f"127.0.0.1:{port}")
    with pytest.raises(RegistryError) as e:
        client.request("GET", "/v2/", scopes=())
    assert str(e.value) == f"127.0.0.1:{port}: cannot reach 127.0.0.1:{port}: connection refused"
    assert client.requests == 1 and slept == []


def _raising(error: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(str(error), request=request) from error

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("error", "message", "retried"),
    [
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "cannot resolve registry.test: no such host",
            False,
        ),
        (
            socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
            "cannot resolve registry.test: temporary failure in name resolution",
            True,
        ),
        (
            ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate"),
            "cannot reach registry.test:443: its TLS certificate is not trusted "
            "(certificate verify failed: self-signed certificate); tls_verify=False "
            "accepts it",
            False,
        ),
        (
            ConnectionRefusedError(111, "Connection refused"),
            "cannot reach registry.test:443: connection refused",
            True,  # a remote registry may be restarting
        ),
        (
            OSError(113, "No route to host"),
            "cannot reach registry.test:443: no route to host",
            True,
        ),
    ],
)
def test_connection_failures_in_words(
    error: Exception, message: str, retried: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(rc.time, "sleep", slept.append)
    client = RegistryClient("registry.test", transport=_raising(error))
    with pytest.raises(RegistryError) as e:
        client.request("GET", "/v2/", scopes=())
    assert str(e.value) == f"registry.test: {message}"
    assert "--" not in str(e.value), "the library says its own names, not the CLI's flags"
    said = e.value.worded({"tls_verify=False": "--tls-verify=false"})
    assert said == f"registry.test: {message}".replace("tls_verify=False", "--tls-verify=false")
    assert (client.requests > 1) is retried
    assert bool(slept) is retried


def test_the_words_do_not_depend_on_the_wrapping() -> None:
    """httpx wraps the socket's error once or twice; the words come from the socket's."""
    inner = ConnectionRefusedError(111, "Connection refused")
    try:
        try:
            raise inner
        except OSError as e:
            raise httpx.ConnectError("[Errno 111] Connection refused") from e
    except httpx.ConnectError as outer:
        assert connection_failure(outer, "h:1") == ("cannot reach h:1: connection refused", True)
    timeout = httpx.ConnectTimeout("timed out")
    assert connection_failure(timeout, "h:1") == ("cannot reach h:1: no answer (timed out)", True)
    assert connection_failure(FileNotFoundError(2, "No such file or directory"), "/run/d.sock")[
        0
    ] == ("cannot reach /run/d.sock: no such socket")


def test_the_cli_says_it_in_one_line_at_once() -> None:
    port = _refused_port()
    proc = ocikit("inspect", f"docker://127.0.0.1:{port}/app:1")
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        f"ocikit: error: docker://127.0.0.1:{port}/app:1: cannot reach 127.0.0.1:{port}: "
        "connection refused\n"
    )


def test_an_engine_that_is_not_there() -> None:
    proc = ocikit(
        "inspect", "docker-daemon:app:1", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        "ocikit: error: cannot reach the docker engine at unix:///nonexistent/docker.sock: "
        "no such socket (is dockerd running? DOCKER_HOST names the engine)\n"
    )


def test_the_destination_is_reached_before_the_source_is_read() -> None:
    """A copy from a source that would take long to read stops at once on a destination
    that cannot take it: a registry that does not answer, an engine that is not there."""
    src, dst = _refused_port(), _refused_port()
    proc = ocikit("copy", f"docker://127.0.0.1:{src}/a:1", f"docker://127.0.0.1:{dst}/b:1")
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        f"ocikit: error: docker://127.0.0.1:{dst}/b:1: cannot reach 127.0.0.1:{dst}: "
        "connection refused\n"
    )
    proc = ocikit(
        "copy",
        f"docker://127.0.0.1:{src}/a:1",
        "docker-daemon:b:1",
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith(
        "ocikit: error: docker-daemon:b:1: cannot reach the docker engine at "
        "unix:///nonexistent/docker.sock: no such socket"
    )


def test_the_library_takes_registry_options_everywhere() -> None:
    """``ocikit.RegistryOptions`` and ``ocikit.Credentials`` are public, and every call that
    reads an image takes them."""
    import ocikit

    port = _refused_port()
    options = ocikit.RegistryOptions(credentials=ocikit.Credentials.parse("alice:secret"))
    for call in (ocikit.inspect, ocikit.check):
        with pytest.raises(RegistryError, match="connection refused"):
            call(f"docker://127.0.0.1:{port}/app:1", registry=options)
