"""Registry credentials kept by the user: the auth files docker and the containers tools
(skopeo, podman, buildah) share, and the credential helpers they name.

- Lookup (``credentials_from_authfile``): ``--authfile`` alone when given; else, in order,
  ``$REGISTRY_AUTH_FILE`` (or, unset, ``$XDG_RUNTIME_DIR/containers/auth.json``),
  ``${XDG_CONFIG_HOME:-~/.config}/containers/auth.json``, ``~/.docker/config.json``: the
  first file that has credentials for the host wins (containers-auth.json(5)'s order).
- In one file, as docker reads it: ``credHelpers[HOST]`` names a helper for that host, else
  ``credsStore`` one for every host; what the helper does not hold is taken from ``auths``.
- A helper is ``docker-credential-NAME`` on the user's ``PATH``, run with the user's
  environment (a keyring needs its ``DBUS_SESSION_BUS_ADDRESS``, ``GNUPGHOME``...): it is
  the user's own program, run as docker runs it. ``get`` is given the server URL on stdin
  and answers ``{"Username", "Secret"}``; its answer is read up to ``HELPER_ANSWER`` bytes,
  and it may take ``HELPER_TIMEOUT`` s (a keyring may ask to be unlocked).
- ``login`` writes where the lookup looks first among the files that exist (``--authfile``
  or ``$REGISTRY_AUTH_FILE`` when given), else docker's ``~/.docker/config.json``: atomically,
  mode 0600, every other entry kept, through a symlink to its target. A file that names a
  helper for the host has the credentials stored by the helper instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import InputError, Option, UsageError
from ..model.jsondoc import SMALL_LIMIT, load_json, one_line, quote, read_limited
from .fsutil import atomic_output
from .registry_client import Credentials, RegistryClient, raise_for

HELPER_TIMEOUT = 60.0  # seconds a credential helper may take
HELPER_ANSWER = 64 << 10  # bytes of its answer read (run keeps this much)
DOCKER_HUB = "https://index.docker.io/v1/"  # docker's key for Docker Hub
_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def docker_config() -> str:
    return os.path.join(os.path.expanduser("~"), ".docker", "config.json")


def auth_file_paths() -> list[str]:
    """The files looked in, in order, when no ``--authfile`` is given."""
    first = os.environ.get("REGISTRY_AUTH_FILE")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not first and runtime:
        first = os.path.join(runtime, "containers", "auth.json")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    paths = [first] if first else []
    paths += [os.path.join(config, "containers", "auth.json"), docker_config()]
    return list(dict.fromkeys(paths))


def login_path(authfile: str | None = None) -> str:
    """Where ``login`` writes: the file given (``--authfile``, ``$REGISTRY_AUTH_FILE``), else
    the first of the lookup that exists (so what is written is what is found), else
    docker's."""
    given = authfile or os.environ.get("REGISTRY_AUTH_FILE")
    if given:
        return given
    for path in auth_file_paths():
        if os.path.exists(path):
            return path
    return docker_config()


_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)


def registry_host(text: str) -> str:
    """HOST[:PORT] of what a user names a registry by (``https://HOST/`` and
    ``docker://HOST`` too; Docker Hub's names are ``docker.io``)."""
    host = text.strip()
    for prefix in ("docker://", "https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    if host in (DOCKER_HUB[len("https://") :], "index.docker.io/v1", "index.docker.io/v1/"):
        return "docker.io"
    host = host.rstrip("/")
    if not _HOST.match(host):
        raise UsageError(f"{quote(text)} is not a registry's HOST[:PORT]")
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host.lower()


def entry_keys(host: str) -> list[str]:
    """The keys an ``auths`` entry (or ``credHelpers``) for ``host`` may have."""
    keys = [host, f"https://{host}", f"http://{host}"]
    if host == "docker.io":
        keys += [DOCKER_HUB, "index.docker.io", "registry-1.docker.io"]
    return keys


def server_url(host: str) -> str:
    """What a credential helper is asked for (what docker stores under)."""
    return DOCKER_HUB if host == "docker.io" else host


@dataclass(frozen=True)
class Helper:
    """A credential helper to ask (``where``: the file and key that name it)."""

    name: str
    where: str


Candidate = Credentials | Helper


def candidates(host: str, authfile: str | None = None) -> list[Candidate]:
    """What may hold credentials for ``host``, in the order they are tried: the files are
    read (and their errors said) now, the helpers are asked only by ``resolve``."""
    found: list[Candidate] = []
    for path in [authfile] if authfile else auth_file_paths():
        data = _load(path, explicit=bool(authfile))
        if data is None:
            continue
        helper = _helper_for(data, host)
        if helper is not None:
            found.append(Helper(helper[0], f"{path}: {helper[1]}"))
        entry = _from_auths(data, host, path)
        if entry is not None:
            found.append(entry)
            break  # nothing after it is ever tried
    return found


def resolve(host: str, found: list[Candidate]) -> Credentials | None:
    """The first credentials the candidates give (helpers asked in turn), if any."""
    for candidate in found:
        if isinstance(candidate, Credentials):
            return candidate
        got = helper_get(candidate.name, host, candidate.where)
        if got is not None:
            return got
    return None


def credentials_from_authfile(host: str, authfile: str | None = None) -> Credentials | None:
    """The credentials for ``host`` the user keeps (see the module's doc), if any."""
    return resolve(host, candidates(host, authfile))


def _load(path: str, *, explicit: bool) -> dict[str, Any] | None:
    """The auth file's object; None if it does not exist (an error for one given)."""
    try:
        with open(path, "rb") as f:
            raw = read_limited(f, path, SMALL_LIMIT)
        data = load_json(raw, path, limit=SMALL_LIMIT) if raw.strip() else {}
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"{path}: no such auth file") from None
        return None
    except OSError as e:
        raise UsageError(f"{path}: not a readable auth file ({e.strerror or e})") from None
    except InputError as e:
        raise UsageError(f"not a usable auth file: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a usable auth file (not a JSON object)")
    return data


def _helper_for(data: Mapping[str, Any], host: str) -> tuple[str, str] | None:
    """(helper NAME, where it is named) for ``host`` in a config, if any."""
    helpers = data.get("credHelpers")
    if isinstance(helpers, Mapping):
        for key in entry_keys(host):
            if isinstance(helpers.get(key), str) and helpers[key]:
                return helpers[key], f"credHelpers[{quote(key)}]"
    store = data.get("credsStore")
    if isinstance(store, str) and store:
        return store, "credsStore"
    return None


def _from_auths(data: Mapping[str, Any], host: str, path: str) -> Credentials | None:
    auths = data.get("auths")
    if not isinstance(auths, Mapping):
        return None
    for key in entry_keys(host):
        entry = auths.get(key) or auths.get(key.rstrip("/"))
        if isinstance(entry, Mapping) and isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise UsageError(f"{path}: the entry for {key} is not base64") from None
            return Credentials.parse(decoded, f"{path}: {key}")
    return None


# -- credential helpers --------------------------------------------------------------------


def _helper(name: str, where: str) -> tuple[str, str]:
    """(path of ``docker-credential-NAME``, its name); one line if it is not there."""
    program = f"docker-credential-{name}"
    if not _HELPER_NAME.match(name):
        raise UsageError(f"{where}: {quote(name)} is not a credential helper's name")
    found = shutil.which(program)
    if found is None:
        raise UsageError(f"{where} names the credential helper {program}, which is not on PATH")
    return found, program


def _call(name: str, verb: str, data: bytes, where: str) -> tuple[int, bytes, str]:
    """Run the helper's ``verb`` with ``data`` on stdin: (exit code, stdout, last line)."""
    from ..tools import run  # here: only a credential helper is a program to run

    path, program = _helper(name, where)
    result = run(
        [path, verb],
        f"{program} {verb}",
        timeout=HELPER_TIMEOUT,
        input=data,
        env=os.environ,
    )
    if len(result.stdout) >= HELPER_ANSWER:
        raise UsageError(f"{program} {verb}: its answer is too large (over 64 KiB)")
    return result.code, result.stdout, result.message()


def _not_found(out: bytes) -> bool:
    return b"credentials not found" in out.lower()


def helper_get(name: str, host: str, where: str) -> Credentials | None:
    """What ``docker-credential-NAME get`` holds for ``host`` (None: nothing)."""
    program = f"docker-credential-{name}"
    code, out, message = _call(name, "get", server_url(host).encode(), where)
    if code != 0:
        if _not_found(out):
            return None
        raise UsageError(f"{program} get {host}: failed ({message})")
    try:
        data = load_json(out, f"{program}'s answer", limit=HELPER_ANSWER)
    except InputError as e:
        raise UsageError(str(e)) from None
    user = data.get("Username") if isinstance(data, Mapping) else None
    secret = data.get("Secret") if isinstance(data, Mapping) else None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise UsageError(f"{program} get {host}: not an answer with Username and Secret")
    if user == "<token>":
        raise UsageError(
            f"{program} holds an identity token for {host}, which ocikit cannot use; give ",
            Option("credentials"),
            " USER:PASSWORD",
        )
    if not user:
        return None
    return Credentials(user, secret)


def _helper_store(name: str, host: str, credentials: Credentials, where: str) -> None:
    program = f"docker-credential-{name}"
    payload = {
        "ServerURL": server_url(host),
        "Username": credentials.username,
        "Secret": credentials.password,
    }
    code, _, message = _call(name, "store", json.dumps(payload).encode(), where)
    if code != 0:
        raise UsageError(f"{program} store {host}: failed ({message})")


def _helper_erase(name: str, host: str, where: str) -> bool:
    code, out, message = _call(name, "erase", server_url(host).encode(), where)
    if code != 0 and not _not_found(out):
        raise UsageError(f"docker-credential-{name} erase {host}: failed ({message})")
    return code == 0


# -- login, logout -------------------------------------------------------------------------


def verify(
    host: str,
    credentials: Credentials,
    *,
    tls_verify: bool | None = None,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """``GET /v2/`` with the credentials: ``AuthError`` if the registry refuses them."""
    client = RegistryClient(
        host, credentials=credentials, tls_verify=tls_verify, transport=transport
    )
    try:
        response = client.request("GET", "/v2/", scopes=(), what=host)
        if response.status_code != 200:
            raise_for(response, host)
    finally:
        client.close()


def login(
    host: str,
    credentials: Credentials,
    *,
    authfile: str | None = None,
    tls_verify: bool | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """Check the credentials against the registry, then keep them (see the module's doc);
    the file written (or that names the helper that stored them)."""
    verify(host, credentials, tls_verify=tls_verify, transport=transport)
    path = login_path(authfile)
    data = _load(path, explicit=False) or {}
    helper = _helper_for(data, host)
    if helper is not None:
        _helper_store(helper[0], host, credentials, f"{path}: {helper[1]}")
        return path
    auths = data.get("auths")
    if auths is None:
        auths = data["auths"] = {}
    if not isinstance(auths, dict):
        raise UsageError(f"{path}: not a usable auth file (its auths is not an object)")
    for key in entry_keys(host):  # one entry for the host, under docker's key
        auths.pop(key, None)
    raw = f"{credentials.username}:{credentials.password}".encode()
    auths[server_url(host)] = {"auth": base64.b64encode(raw).decode()}
    return _write(path, data)


def logout(host: str, authfile: str | None = None) -> list[str]:
    """Forget the credentials for ``host`` in every file of the lookup (``authfile`` alone,
    when given) and the helpers they name; the files (or helpers) that held some."""
    forgot = []
    for path in [authfile] if authfile else auth_file_paths():
        data = _load(path, explicit=bool(authfile))
        if data is None:
            continue
        helper = _helper_for(data, host)
        if helper is not None and _helper_erase(helper[0], host, f"{path}: {helper[1]}"):
            forgot.append(f"docker-credential-{helper[0]}")
        auths = data.get("auths")
        if isinstance(auths, dict):
            keys = [k for k in entry_keys(host) if k in auths]
            for key in keys:
                del auths[key]
            if keys:
                forgot.append(_write(path, data))
    return forgot


def _write(path: str, data: dict[str, Any]) -> str:
    """The file replaced atomically, mode 0600 (a symlink's target: the link stays)."""
    real = os.path.realpath(path)
    try:
        os.makedirs(os.path.dirname(real), mode=0o700, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{os.path.dirname(real)}: cannot make it ({e.strerror or e})") from None
    text = json.dumps(data, indent="\t", ensure_ascii=False) + "\n"
    with atomic_output(real, mode=0o600, what=one_line(path)) as f:
        f.write(text.encode())
    return real
