"""The recipe: a YAML file of images, validated whole before anything is built.

Every error is collected (schema, substitutions, names, cycles, imports) and reported at once,
each with its path in the file (``images.app.from``). The schema is the pydantic models
below; ``recipe_schema()`` gives it as JSON Schema (shipped as docs/recipe.schema.json).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import UsageError
from ..model.jsondoc import quote

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
SUBST_RE = re.compile(r"\$\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::([^}]*))?\}\}")
SHA256_RE = re.compile(r"^(sha256:)?[0-9a-f]{64}$")
SIGNAL_RE = re.compile(r"^(SIG[A-Z0-9+-]+|[0-9]+)$")
PORT_RE = re.compile(r"^[0-9]{1,5}(/(tcp|udp|sctp))?$")


class RecipeError(UsageError):
    """The recipe is invalid; ``problems`` lists every error as ``path: message``."""

    def __init__(self, problems: list[str], what: str) -> None:
        self.problems = problems
        lines = "; ".join(problems)
        super().__init__(f"{what}: {len(problems)} error(s): {lines}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Built(_Model):
    """Another image of this file, as a base."""

    built: str


class Import(_Model):
    """A file, directory or tarball of the build context, copied into the image."""

    src: str = Field(description="Path in the build context (relative to it).")
    dest: str | None = Field(
        None,
        description="Absolute path in the image. A file goes to DEST (or DEST/NAME when DEST "
        "ends with /); a directory's contents and a tarball's entries go under DEST. Without "
        "it, the import is only visible to run steps, at /ocikit/imports/SRC.",
    )
    mode: int | str | None = Field(
        None, description="Permission bits of the imported files (octal string or number)."
    )
    owner: str | None = Field(None, description="UID:GID of every imported entry (default 0:0).")
    sha256: str | None = Field(None, description="Pin: the file's or tarball's sha256.")
    extract: bool | None = Field(
        None,
        description="Unpack a tarball (default: true for .tar, .tar.gz, .tgz, .tar.zst names).",
    )

    @field_validator("dest")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must be an absolute path in the image")
        return v

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: int | str | None) -> int | str | None:
        if v is None:
            return v
        if isinstance(v, str):
            if not re.fullmatch(r"0?[0-7]{3,4}", v):
                raise ValueError("must be octal permission bits, like 0644")
            v = int(v, 8)
        if not 0 <= v <= 0o7777:
            raise ValueError("must be permission bits between 0 and 07777")
        return v

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9]{1,10}:[0-9]{1,10}", v):
            raise ValueError("must be UID:GID (numbers)")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not SHA256_RE.fullmatch(v):
            raise ValueError("must be 64 lowercase hex digits")
        return v.removeprefix("sha256:") if v else v


class ImageConfigSpec(_Model):
    """The runtime configuration of the image (OCI image config ``config``)."""

    env: dict[str, str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None
    working_dir: str | None = None
    labels: dict[str, str] | None = None
    exposed_ports: list[str] | None = None
    volumes: list[str] | None = None
    stop_signal: str | None = None

    @field_validator("exposed_ports")
    @classmethod
    def _ports(cls, v: list[str] | None) -> list[str] | None:
        for p in v or []:
            if not PORT_RE.fullmatch(p):
                raise ValueError(f"{quote(p)} is not PORT or PORT/tcp|udp|sctp")
        return v

    @field_validator("stop_signal")
    @classmethod
    def _signal(cls, v: str | None) -> str | None:
        if v is not None and not SIGNAL_RE.fullmatch(v):
            raise ValueError(f"{quote(v)} is not a signal name (SIGTERM) or number")
        return v

    @field_validator("volumes", "working_dir")
    @classmethod
    def _paths(cls, v: Any) -> Any:
        for p in [v] if isinstance(v, str) else v or []:
            if not p.startswith("/"):
                raise ValueError(f"{quote(p)} must be an absolute path")
        return v


class Bind(_Model):
    """A host path mounted into run steps."""

    src: str = Field(description="Host path (relative: to the build context).")
    dest: str = Field(description="Absolute path in the step's container.")
    rw: bool = Field(False, description="Writable (default read-only, and part of the key).")

    @field_validator("dest")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or ".." in v.split("/"):
            raise ValueError("must be an absolute path without '..'")
        return v


class ImageSpec(_Model):
    from_: str | Built = Field(
        alias="from",
        description="scratch, an ocikit reference (oci:, oci-archive:, docker-archive:, "
        "docker://), or {built: NAME}, another image of this file.",
    )
    build_only: bool = Field(False, description="Built and usable as a base, never output.")
    imports: list[Import] = Field(default_factory=list)
    config: ImageConfigSpec = Field(default_factory=ImageConfigSpec)
    os: str | None = Field(None, description="Default: the base's, else linux.")
    arch: str | None = Field(None, description="Default: the base's, else the host's.")
    variant: str | None = None
    annotations: dict[str, str] | None = Field(None, description="Manifest annotations.")
    platform: str | None = Field(
        None, description="Of a multi-platform base: which one (os/arch[/variant])."
    )
    run: str | list[str] | None = Field(
        None,
        description="Commands run in the image after the imports, in a container: a script, "
        "or a list of commands run one after the other (each by the shell). Their changes "
        "are the image's layer.",
    )
    shell: list[str] | None = Field(
        None, description='The shell that runs each command (default ["/bin/sh", "-c"]).'
    )
    network: Literal["none", "host"] = Field(
        "none", description="none: a network namespace with only loopback; host: the host's."
    )
    binds: list[Bind] = Field(default_factory=list, description="Host paths mounted for run.")
    cache: bool = Field(True, description="false: the run steps always run (never cached).")


class Recipe(_Model):
    version: Literal[1] = Field(1, description="The recipe format's version.")
    images: dict[str, ImageSpec]


@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    path: Path
    context: Path  # imports are relative to it

    @property
    def images(self) -> Mapping[str, ImageSpec]:
        return self.recipe.images


def recipe_schema() -> dict[str, Any]:
    return Recipe.model_json_schema(by_alias=True)


def parse_substitutions(pairs: list[str], files: list[str]) -> dict[str, str]:
    """``VAR=VALUE`` pairs (later ones win) after the files' lines (``VAR=VALUE``, # comments)."""
    values: dict[str, str] = {}
    for path in files:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise UsageError(f"--substitute-file {path}: {e.strerror or e}") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            _put(values, line, f"{path}:{n}")
    for pair in pairs:
        _put(values, pair, "--substitute")
    return values


def _put(values: dict[str, str], pair: str, what: str) -> None:
    name, sep, value = pair.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise UsageError(f"{what}: expected VAR=VALUE, got {quote(pair)}")
    values[name] = value


def load_recipe(
    path: str | os.PathLike[str],
    substitutions: Mapping[str, str] | None = None,
    context: str | os.PathLike[str] | None = None,
    targets: Sequence[str] = (),
) -> LoadedRecipe:
    """Read, substitute and validate the recipe; RecipeError lists every problem. The
    imports' files are looked for in ``context`` for the images that will be built (all, or
    ``targets`` and their bases)."""
    path = Path(path)
    what = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{what}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{what}: cannot read the recipe ({e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError([f"not valid YAML{where}: {getattr(e, 'problem', e)}"], what) from None
    problems: list[str] = []
    data = _substitute(data, dict(substitutions or {}), "", problems)
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        raise RecipeError([*problems, "images: the recipe needs a mapping of images"], what)
    recipe = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        problems.extend(_format(err) for err in e.errors())
    ctx = Path(context) if context is not None else path.parent
    problems.extend(_semantic(data["images"], ctx, targets))
    if problems:
        raise RecipeError(problems, what)
    assert recipe is not None
    return LoadedRecipe(recipe, path, ctx)


def _substitute(node: Any, values: dict[str, str], where: str, problems: list[str]) -> Any:
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in values:
                return values[name]
            if default is not None:
                return default
            problems.append(f"{where or '.'}: ${{{{{name}}}}} is not set and has no default")
            return m.group(0)

        return SUBST_RE.sub(repl, node)
    if isinstance(node, dict):
        return {k: _substitute(v, values, _join(where, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values, f"{where}[{i}]", problems) for i, v in enumerate(node)]
    return node


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _format(err: Any) -> str:
    where = ""
    for part in err["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part in ("str", "Built"):  # which member of ``str | Built`` was tried
            continue
        else:
            where = _join(where, str(part))
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{where or '.'}: {message}"


def _semantic(images: dict[str, Any], context: Path, targets: Sequence[str]) -> list[str]:
    """Names, bases (unknown, cycles), imports (present in the context, pins), read from the
    raw data so that an image with a schema error is checked as far as it can be."""
    problems = []
    if not images:
        problems.append("images: no image defined")
    bases: dict[str, str] = {}
    for name, spec in images.items():
        where = f"images.{name}"
        if not NAME_RE.fullmatch(str(name)):
            problems.append(f"{where}: image names are lowercase letters, digits, '.', '_', '-'")
        if not isinstance(spec, dict):
            continue
        base = spec.get("from")
        if isinstance(base, dict) and isinstance(base.get("built"), str):
            built = base["built"]
            if built not in images:
                problems.append(f"{where}.from: no image named {quote(built)} in this file")
            elif built == name:
                problems.append(f"{where}.from: an image cannot be built from itself")
            else:
                bases[name] = built
        elif isinstance(base, str) and base.startswith("built:"):
            problems.append(f"{where}.from: write another image of the file as {{built: NAME}}")
        elif isinstance(base, str) and base != "scratch":
            problems.extend(_check_reference(base, f"{where}.from", context))
    cycles = _cycles(bases)
    problems.extend(cycles)
    wanted = set(images)
    if targets and not cycles:
        wanted = set()
        for t in targets:
            node: str | None = t
            while node is not None and node in images and node not in wanted:
                wanted.add(node)
                node = bases.get(node)
    for name, spec in images.items():
        imports = spec.get("imports") if isinstance(spec, dict) and name in wanted else None
        for i, imp in enumerate(imports if isinstance(imports, list) else []):
            if isinstance(imp, dict) and isinstance(imp.get("src"), str):
                problems.extend(_check_import(imp, f"images.{name}.imports[{i}]", context))
                if imp.get("dest") is None and not spec.get("run"):
                    problems.append(
                        f"images.{name}.imports[{i}].dest: needed (without run steps, an "
                        f"import without dest would go nowhere)"
                    )
        binds = spec.get("binds") if isinstance(spec, dict) and name in wanted else None
        for i, bind in enumerate(binds if isinstance(binds, list) else []):
            if isinstance(bind, dict) and isinstance(bind.get("src"), str):
                src = Path(bind["src"])
                if not os.path.lexists(src if src.is_absolute() else context / src):
                    problems.append(f"images.{name}.binds[{i}].src: {bind['src']} does not exist")
    return problems


def _check_reference(text: str, where: str, context: Path) -> list[str]:
    from ..transports import parse_reference

    try:
        ref = parse_reference(text)
    except UsageError as e:
        return [f"{where}: {e}"]
    if ref.is_stdio:
        return [f"{where}: a base cannot be read from standard input"]
    if ref.transport in ("oci", "oci-archive", "docker-archive"):
        path = Path(ref.path)
        if not path.is_absolute():
            path = context / path
        if not path.exists():
            return [f"{where}: {ref.path} does not exist (relative to {context})"]
    return []


def _check_import(imp: dict[str, Any], where: str, context: Path) -> list[str]:
    problems = []
    src = Path(imp["src"])
    if src.is_absolute() or ".." in src.parts:
        return [f"{where}.src: must be a path inside the build context"]
    full = context / src
    if not os.path.lexists(full):
        return [f"{where}.src: {imp['src']} does not exist in the build context {context}"]
    root = Path(os.path.realpath(context))
    real = Path(os.path.realpath(full))
    if real != root and root not in real.parents:
        problems.append(f"{where}.src: {imp['src']} leads outside the build context")
    if imp.get("sha256") is not None and full.is_dir():
        problems.append(f"{where}.sha256: pins a file or a tarball, not a directory")
    if imp.get("extract") and not full.is_file():
        problems.append(f"{where}.extract: {imp['src']} is not a tarball")
    return problems


def _cycles(bases: dict[str, str]) -> list[str]:
    """Every cycle of ``built`` bases, each named once (images in the order of the cycle)."""
    problems = []
    reported: set[str] = set()
    for start in sorted(bases):
        chain, seen = [start], {start}
        node = start
        while node in bases:
            node = bases[node]
            if node in seen:
                cycle = chain[chain.index(node) :]
                if not reported & set(cycle):
                    problems.append(
                        f"images.{cycle[0]}.from: a cycle of bases: "
                        + " -> ".join([*cycle, cycle[0]])
                    )
                reported.update(cycle)
                break
            chain.append(node)
            seen.add(node)
    return problems
