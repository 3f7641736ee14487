"""Transports are types, not strings: one registry of transports by name, each parsing its own
reference, saying what it is (``TransportProperties``) and opening its own source, index and
destination; callers ask the properties, never the name. In-process."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

import ocikit.transports as transports
from ocikit.errors import UsageError
from ocikit.transports import kinds
from ocikit.transports.kinds import (
    TRANSPORTS,
    Reference,
    Transport,
    TransportProperties,
    find_transport,
    parse_reference,
    transport_named,
)

SRC = Path(transports.__file__).resolve().parents[1]
DIGEST = "sha256:" + "a" * 64

#: what each transport is, in the words callers ask
PROPERTIES = {
    "oci": dict(local_path=True, layout_directory=True, holds_index=True),
    "oci-archive": dict(local_path=True, holds_index=True),
    "docker-archive": dict(local_path=True, docker_save=True, streamed_from_stdin=True),
    "docker-daemon": dict(streamed=True),
    "docker": dict(holds_index=True, registry=True, default_jobs=4),
}


def test_the_registry_lists_every_transport_in_order() -> None:
    assert TRANSPORTS == ("oci", "oci-archive", "docker-archive", "docker-daemon", "docker")
    assert transports.TRANSPORTS == TRANSPORTS
    for name in TRANSPORTS:
        kind = transport_named(name)
        assert isinstance(kind, Transport) and kind.name == name
        assert find_transport(name) is kind
    assert find_transport("nope") is None
    with pytest.raises(UsageError, match="unknown transport 'nope'; known: oci, oci-archive"):
        transport_named("nope")


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered already"):
        kinds.register(kinds.OciTransport())


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_each_transport_says_what_it_is(name: str) -> None:
    props = transport_named(name).properties
    assert props == TransportProperties(**PROPERTIES[name])  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        props.registry = not props.registry  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "streamed", "host"),
    [
        ("oci:dir:tag", False, None),
        ("oci-archive:-", False, None),
        ("docker-archive:a.tar:x:1", False, None),
        ("docker-archive:-", True, None),
        ("docker-daemon:busybox", True, None),
        ("docker://localhost:5000/a/b:1", False, "localhost:5000"),
        ("docker://busybox", False, "docker.io"),
    ],
)
def test_a_reference_reaches_its_transport(text: str, streamed: bool, host: str | None) -> None:
    ref = parse_reference(text)
    assert ref.kind is transport_named(ref.transport)
    assert ref.properties is ref.kind.properties
    assert ref.streamed is streamed
    assert ref.registry_host == host


@pytest.mark.parametrize(
    ("text", "digest"),
    [
        (f"oci:dir@{DIGEST}", DIGEST),
        ("oci:dir:sha256:x", None),  # a ref name, not a digest
        (f"docker://example.com/r@{DIGEST}", DIGEST),
        ("docker://example.com/r:1", None),
        (f"docker-daemon:{DIGEST}", None),  # an image ID: the config's digest
        ("docker-archive:a.tar@0", None),
    ],
)
def test_a_reference_says_which_manifest_digest_it_names(text: str, digest: str | None) -> None:
    assert parse_reference(text).manifest_digest == digest


@pytest.mark.parametrize(
    "text",
    [
        "oci:dir",
        "oci:dir:name",
        "oci:dir@2",
        f"oci:dir@{DIGEST}",
        "oci-archive:a.tar:x@1",
        "docker-archive:a.tar",
        "docker-archive:a.tar@1",
        "docker-archive:a.tar:example.com/x:1",
        "docker-daemon:busybox:1",
        f"docker-daemon:{DIGEST}",
        "docker://localhost:5000/a/b:1",
        f"docker://example.com/r@{DIGEST}",
    ],
)
def test_each_transport_reads_back_what_it_writes(text: str) -> None:
    ref = parse_reference(text)
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nothing", "expected TRANSPORT:DETAILS (transports: oci, oci-archive, docker-archive"),
        ("nope:x", "unknown transport 'nope' in 'nope:x'; known: oci,"),
        ("oci:", "missing path"),
        ("docker-daemon:", "missing path"),
        ("docker-daemon:sha256:abc", "bad image ID"),
        ("docker-archive:a.tar:Bad Name", "is not a valid NAME:TAG"),
        ("docker:busybox", "expected docker://HOST/REPO[:TAG]"),
        ("oci:dir@sha256:xyz", "after @ comes a position"),
    ],
)
def test_each_transport_refuses_its_own_malformed_references(text: str, message: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_reference(text)
    assert message in str(e.value)


class _Opened(Exception):
    """What the fake transport was asked to open, raised to end the call."""


class _Fake(Transport):
    """A transport registered for one test: it proves the public functions ask the registry."""

    name = "fake"
    properties = TransportProperties()

    def parse(self, text: str, rest: str) -> Reference:
        return Reference(self.name, rest)

    def open_source(self, ref: Any, platform: Any, tee: Any, registry: Any) -> Any:
        raise _Opened("source", ref.path, platform, tee, registry)

    def open_index(self, ref: Any, registry: Any) -> Any:
        raise _Opened("index", ref.path, registry)

    def open_destination(self, ref: Any, tags: Any, registry: Any, *rest: Any) -> Any:
        raise _Opened("destination", ref.path, tuple(tags), registry)


def test_the_public_functions_are_lookups_in_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(kinds._KNOWN, "fake", _Fake())
    ref = transports.parse_reference("fake:here")
    assert ref == Reference("fake", "here") and isinstance(ref.kind, _Fake)
    with pytest.raises(_Opened) as e:
        transports.open_source("fake:here", None, None, "options")  # type: ignore[arg-type]
    assert e.value.args == ("source", "here", None, None, "options")
    with pytest.raises(_Opened) as e:
        transports.open_index("fake:x", "options")  # type: ignore[arg-type]
    assert e.value.args == ("index", "x", "options")
    with pytest.raises(_Opened) as e:
        transports.open_destination("fake:y", ["t"])
    assert e.value.args == ("destination", "y", ("t",), None)


def test_a_destination_never_selects() -> None:
    for text in ("oci:dir@1", f"oci-archive:a.tar@{DIGEST}", "docker-archive:a.tar@0"):
        with pytest.raises(UsageError, match="@N and @DIGEST select a stored image to read"):
            transports.open_destination(text)


def test_a_transport_of_one_image_holds_no_index() -> None:
    for text in ("docker-archive:nowhere.tar", "docker-daemon:busybox"):
        with transports.open_index(text) as top:  # nothing is read: there is no index
            assert top.index is None and top.ref == parse_reference(text)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_references_do_not_import_the_transports_implementations() -> None:
    """reference.py needs only the registry; the registry reaches an implementation only in
    an ``open_*`` (no cycle: daemon.py imports the reference, never the other way)."""
    here = SRC / "transports"
    assert _imports(here / "reference.py") == {"__future__", ".kinds"}
    tree = ast.parse((here / "kinds.py").read_text())
    top = {
        "." * n.level + (n.module or "")
        for n in tree.body
        if isinstance(n, ast.ImportFrom) and n.level
    }
    assert top == {"..errors", "..model.jsondoc"}, top


def _name_tests(path: Path) -> list[str]:
    """Comparisons of a ``.transport`` with anything: behaviour picked by a name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for operand in operands:
                elements = operand.elts if isinstance(operand, ast.Tuple | ast.List) else [operand]
                if any(isinstance(e, ast.Attribute) and e.attr == "transport" for e in elements):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
                    break
    return found


def test_no_code_picks_behaviour_by_a_transports_name() -> None:
    found = [hit for path in sorted(SRC.rglob("*.py")) for hit in _name_tests(path)]
    assert found == []
