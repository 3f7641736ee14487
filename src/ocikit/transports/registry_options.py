"""How to reach registries (``RegistryOptions``, ``Credentials``): plain data every command
that takes a reference builds, apart from the registry client so that building them loads no
HTTP library (the client and httpx load when a ``docker://`` image is opened)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import UsageError
from .kinds import REGISTRY_JOBS

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @classmethod
    def parse(cls, text: str, what: str = "--creds") -> Credentials:
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise UsageError(f"{what}: expected USER:PASSWORD")
        return cls(user, password)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: one set for the source side, one for the destination."""

    credentials: Credentials | None = None
    tls_verify: bool | None = None  # None: TLS, except plain HTTP for localhost
    authfile: str | None = None
    mount_from: tuple[str, ...] = ()  # repositories (HOST/REPO or REPO) to mount blobs from
    jobs: int = REGISTRY_JOBS
    #: the HTTP transport (httpx's by default; tests give an ``httpx.MockTransport``)
    transport: httpx.BaseTransport | None = field(default=None, compare=False, repr=False)
