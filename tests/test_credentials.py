"""One vocabulary of options, and how credentials are obtained: a prompt on the terminal,
``--password-stdin``, ``ocikit login``/``logout`` (the auth file docker and skopeo share),
credential helpers (``credsStore``, ``credHelpers``)."""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import pty
import select
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from ocikit.errors import OcikitError, UsageError
from ocikit.transports import Credentials
from ocikit.transports.registry_client import AuthError, RegistryClient, credentials_from_authfile
from support.archives import SAMPLE
from support.cli import OCIKIT, ocikit, ok
from support.inprocess import assert_one_line, run
from support.registry import Registry
from support.registry import can_run as registry_can_run

USERS = {"alice": "s3cret"}


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# -- 1. one vocabulary ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "shown", "hidden"),
    [
        ("copy", ["--dest-compress-format", "--dest-compress-level", "--src-creds"], []),
        (
            "build",
            [
                "--dest-compress-format",
                "--dest-compress-level",
                "--src-creds",
                "--dest-creds",
                "--src-tls-verify",
                "--dest-tls-verify",
                "--password-stdin",
            ],
            ["--compress ", "--compress-level", "--creds ", "--tls-verify "],
        ),
        ("export-layers", ["--dest-compress-level"], ["--level "]),
        ("inspect", ["--creds", "--tls-verify", "--password-stdin"], []),
    ],
)
def test_vocabulary_in_help(command: str, shown: list[str], hidden: list[str]) -> None:
    result = run(command, "--help")
    assert result.code == 0, result.stderr
    text = result.stdout.decode()
    for name in shown:
        assert name in text, (command, name)
    for name in hidden:  # the old spellings still work, but are not offered
        assert name not in text.replace(",", " "), (command, name)


def _fake_export(calls: list[dict[str, Any]]) -> Any:
    def export(src: str, outdir: str, **kw: Any) -> Any:
        calls.append(kw)
        return SimpleNamespace(images=[], outdir=outdir, to_dict=dict)

    return export


def test_export_level_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    export_module = importlib.import_module("ocikit.ops.export")  # the command imports it

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(export_module, "export_layers", _fake_export(calls))
    result = run("export-layers", "-q", "--dest-compress-level", "7", "oci:x", "out")
    assert result.code == 0 and result.stderr == "", result.stderr
    assert calls[-1]["level"] == 7
    result = run("export-layers", "-q", "--level", "5", "oci:x", "out")
    assert result.code == 0, result.stderr
    assert calls[-1]["level"] == 5
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "--level" in lines[0] and "--dest-compress-level" in lines[0]
    assert "deprecated" in lines[0]
    result = run("export-layers", "--level", "5", "--dest-compress-level", "6", "oci:x", "out")
    assert_one_line(result, contains="--level")


def _fake_build(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    build_pkg = importlib.import_module("ocikit.build")  # (ocikit.build is also a function)
    seen: list[Any] = []
    monkeypatch.setattr(build_pkg, "load_recipe", lambda *a, **k: object())

    def fake(recipe: object, options: Any, *rest: Any) -> Any:
        seen.append(options)
        return SimpleNamespace(to_dict=dict)

    monkeypatch.setattr(build_pkg, "build", fake)
    return seen


def test_build_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    from ocikit.model import Compression

    seen = _fake_build(monkeypatch)
    result = run(
        "build",
        "-q",
        "--dest-compress-format",
        "zstd",
        "--dest-compress-level",
        "5",
        "--src-creds",
        "a:b",
        "--dest-creds",
        "c:d",
        "--src-tls-verify",
        "false",
    )
    assert result.code == 0 and result.stderr == "", result.stderr
    options = seen[-1]
    assert options.compress == Compression.ZSTD and options.level == 5
    assert options.registry.credentials == Credentials("a", "b")
    assert options.registry.tls_verify is False
    assert options.dest_registry.credentials == Credentials("c", "d")
    assert options.dest_registry.tls_verify is None
    # the old spellings: each a one-line notice; --creds and --tls-verify as before (both)
    result = run(
        "build", "-q", "--compress", "none", "--compress-level", "1", "--creds", "u:p",
        "--tls-verify", "false",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert len(result.stderr.splitlines()) == 4, result.stderr
    assert all("deprecated" in line for line in result.stderr.splitlines())
    options = seen[-1]
    assert options.compress == Compression.NONE and options.level == 1
    assert (
        options.registry.credentials == options.dest_registry.credentials == Credentials("u", "p")
    )
    assert options.registry.tls_verify is options.dest_registry.tls_verify is False


# -- 2. a password from the terminal or from stdin -------------------------------------------


def test_no_terminal_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ocikit.cli import credentials

    monkeypatch.setattr(credentials, "TTY", str(tmp_path / "no-tty"))
    result = run("inspect", "--creds", "alice", "docker://127.0.0.1:1/x:1")
    line = assert_one_line(result, contains="--password-stdin")
    assert "USER:PASS" in line and "alice" in line
    result = run("copy", "--dest-creds", "alice", f"docker-archive:{SAMPLE}", "oci:x:y")
    assert_one_line(result, contains="--dest-creds")


def test_password_stdin_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from ocikit.cli.credentials import MAX_PASSWORD, read_password

    assert read_password(io.BytesIO(b"s3cret\n")) == "s3cret"
    assert read_password(io.BytesIO(b"s3cret\r\n")) == "s3cret"
    assert read_password(io.BytesIO(b"two words ")) == "two words "
    for bad in (b"", b"\n", b"x" * (MAX_PASSWORD + 1)):
        with pytest.raises(UsageError):
            read_password(io.BytesIO(bad))
    # stdin is the image: refused before anything is read
    result = run(
        "copy", "--src-creds", "alice", "--password-stdin", "docker-archive:-", "docker://h/x:1"
    )
    assert_one_line(result, contains="standard input")
    # nothing to give it to; two passwords wanted
    result = run("inspect", "--password-stdin", "docker://127.0.0.1:1/x:1")
    assert_one_line(result, contains="--password-stdin")
    result = run(
        "copy", "--src-creds", "a", "--dest-creds", "b", "--password-stdin", "oci:x:y", "oci:z:w"
    )
    assert_one_line(result, contains="--src-creds")


# -- 4. credential helpers -------------------------------------------------------------------

HELPER = """#!/bin/sh
case "$1" in
  store) cat > "{log}.stored"; exit 0 ;;
  erase) read -r url; printf 'erase %s\\n' "$url" >> "{log}"; exit 0 ;;
  get) ;;
  *) exit 3 ;;
esac
read -r url
printf '%s\\n' "$url" >> "{log}"
case "$url" in
  registry.example) printf '{{"ServerURL":"%s","Username":"hu","Secret":"hs"}}' "$url" ;;
  big.example) head -c 2000000 /dev/zero ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``docker-credential-fake`` on PATH; what it was asked for goes to the returned log."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"
    script = bindir / "docker-credential-fake"
    script.write_text(HELPER.format(log=log))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def _config(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_creds_store(helper: Path, tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {"credsStore": "fake", "auths": {"other.example": {"auth": basic("fa", "fb")}}},
    )
    assert credentials_from_authfile("registry.example", config) == Credentials("hu", "hs")
    assert helper.read_text() == "registry.example\n"
    # the helper has none: the file's entry, else none
    assert credentials_from_authfile("other.example", config) == Credentials("fa", "fb")
    assert credentials_from_authfile("third.example", config) is None
    with pytest.raises(OcikitError, match="too large"):
        credentials_from_authfile("big.example", config)


def test_cred_helpers_win(helper: Path, tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {
            "credHelpers": {"registry.example": "fake", "gone.example": "nothere"},
            "auths": {"registry.example": {"auth": basic("fa", "fb")}},
        },
    )
    assert credentials_from_authfile("registry.example", config) == Credentials("hu", "hs")
    with pytest.raises(UsageError, match="docker-credential-nothere") as info:
        credentials_from_authfile("gone.example", config)
    assert "\n" not in str(info.value)


def test_helper_credentials_sent(helper: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, {"credsStore": "fake"})
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") == f"Basic {basic('hu', 'hs')}":
            return httpx.Response(200, json={})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    client = RegistryClient(
        "registry.example", authfile=config, transport=httpx.MockTransport(handler)
    )
    try:
        assert client.request("GET", "/v2/", scopes=()).status_code == 200
    finally:
        client.close()
    assert seen == [None, f"Basic {basic('hu', 'hs')}"]


def test_login_logout_through_helper(helper: Path, tmp_path: Path) -> None:
    """A file that names a helper for the host: login has the helper store the credentials
    (none written to the file), logout has it erase them."""
    from ocikit.transports.auth import login, logout

    config = _config(tmp_path, {"credHelpers": {"registry.example": "fake"}})
    before = Path(config).read_bytes()
    transport = _basic_registry("alice", "s3cret")
    login("registry.example", Credentials("alice", "s3cret"), authfile=config, transport=transport)
    assert Path(config).read_bytes() == before
    stored = json.loads(Path(f"{helper}.stored").read_text())
    assert stored == {"ServerURL": "registry.example", "Username": "alice", "Secret": "s3cret"}
    assert logout("registry.example", config) == ["docker-credential-fake"]
    assert helper.read_text() == "erase registry.example\n"


# -- 3. login and logout ---------------------------------------------------------------------


def _basic_registry(user: str, password: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") == f"Basic {basic(user, password)}":
            return httpx.Response(200, json={})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    return httpx.MockTransport(handler)


def test_login_writes_auth_file(tmp_path: Path) -> None:
    from ocikit.transports.auth import login

    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "config.json"
    before = {
        "auths": {"other.example": {"auth": basic("o", "p")}},
        "HttpHeaders": {"X-Keep": "1"},
    }
    target.write_text(json.dumps(before))
    target.chmod(0o644)
    link = tmp_path / "config.json"
    link.symlink_to(target)
    transport = _basic_registry("alice", "s3cret")
    with pytest.raises(AuthError):
        login(
            "registry.example",
            Credentials("alice", "wrong"),
            authfile=str(link),
            transport=transport,
        )
    assert json.loads(target.read_text()) == before  # refused: nothing written
    path = login(
        "registry.example", Credentials("alice", "s3cret"), authfile=str(link), transport=transport
    )
    assert link.is_symlink() and os.path.realpath(path) == str(target)
    after = json.loads(target.read_text())
    assert after["HttpHeaders"] == before["HttpHeaders"]
    assert after["auths"]["other.example"] == before["auths"]["other.example"]
    assert after["auths"]["registry.example"] == {"auth": basic("alice", "s3cret")}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not [p for p in dotfiles.iterdir() if p.name != "config.json"]  # no temp left
    assert credentials_from_authfile("registry.example", str(link)) == Credentials(
        "alice", "s3cret"
    )
    # logout: that entry only
    result = run("logout", "--authfile", str(link), "registry.example")
    assert result.code == 0, result.stderr
    after = json.loads(target.read_text())
    assert "registry.example" not in after["auths"] and "other.example" in after["auths"]
    result = run("logout", "--authfile", str(link), "registry.example")
    assert result.code == 0 and "not logged in" in result.stderr


def test_login_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ocikit.transports.auth import auth_file_paths, login_path

    home = tmp_path / "home"
    run_dir = tmp_path / "run"
    for name in ("HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "REGISTRY_AUTH_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_dir))
    docker = str(home / ".docker" / "config.json")
    containers = str(run_dir / "containers" / "auth.json")
    assert auth_file_paths()[0] == containers and auth_file_paths()[-1] == docker
    assert login_path() == docker  # none exists: docker's
    (run_dir / "containers").mkdir(parents=True)
    Path(containers).write_text("{}")
    assert login_path() == containers  # the first of the lookup that exists
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "env.json"))
    assert login_path() == str(tmp_path / "env.json")
    assert login_path(str(tmp_path / "given.json")) == str(tmp_path / "given.json")


@pytest.fixture(scope="module")
def auth_registry() -> Iterator[Registry]:
    why = registry_can_run()
    if why:
        pytest.skip(why)
    with Registry(users=USERS) as reg:
        yield reg


def test_password_stdin_copy(auth_registry: Registry) -> None:
    ref = f"docker://{auth_registry.host}/creds/hello:1"
    ok("copy", "-q", "--dest-creds", "alice", "--password-stdin", f"docker-archive:{SAMPLE}", ref,
       input=b"s3cret\n")  # fmt: skip
    proc = ocikit("inspect", "--creds", "alice", "--password-stdin", ref, input=b"wrong\n")
    assert proc.returncode == 2 and b"authentication failed" in proc.stderr


def test_login_prompts_on_terminal(auth_registry: Registry, tmp_path: Path) -> None:
    """``ocikit login`` on a terminal: the password asked without echo, checked, stored."""
    authfile = tmp_path / "auth.json"
    args = [*OCIKIT, "login", "--username", "alice", "--authfile", str(authfile)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.execv(sys.executable, [*args, auth_registry.host])
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"assword" not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 1)[0]:
                seen += os.read(fd, 4096)
        os.write(fd, b"s3cret\n")
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 1)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"s3cret" not in seen  # never echoed
    data = json.loads(authfile.read_text())
    assert data["auths"][auth_registry.host] == {"auth": basic("alice", "s3cret")}
    assert stat.S_IMODE(authfile.stat().st_mode) == 0o600


@pytest.mark.parametrize("command", ["check", "unpack", "export-layers"])
def test_every_command_that_reads_a_registry_takes_its_credentials(
    command: str, tmp_path: Path
) -> None:
    """check, unpack and export-layers read docker:// images as inspect does: --creds
    (a password asked or read with --password-stdin), --authfile, --tls-verify."""
    text = ok(command, "--help").stdout.decode()
    for option in ("--creds", "--password-stdin", "--authfile", "--tls-verify"):
        assert option in text, (command, option)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [command, "--creds", "alice:secret", "--tls-verify", "false"]
    args.append(f"docker://127.0.0.1:{port}/app:1")
    if command != "check":
        args.append(str(tmp_path / "out"))
    proc = ocikit(*args)
    assert proc.returncode == 2
    assert "cannot reach 127.0.0.1" in proc.stderr.decode(), proc.stderr
