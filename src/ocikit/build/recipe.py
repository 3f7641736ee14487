"""The recipe: a YAML file of images, validated whole before anything is built.

Every error is collected (schema, substitutions, names, cycles, imports) and reported at once,
each with its path in the file (``images.app.from``), one per line, without the follow-ups of
an error already said. The schema is the records below (``schema``: typed frozen dataclasses);
``recipe_schema()`` gives it as JSON Schema (shipped as docs/recipe.schema.json).

What YAML would silently change is refused or taken as written, never guessed: a key written
twice (anywhere), a ``mode`` YAML reads as a decimal number, a command YAML made into a list;
a plain scalar YAML reads as a number, a boolean or a date where the schema wants text is the
text written (``cmd: [sleep, 10]``, ``user: 1000``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from ..errors import Option, UsageError
from ..model.jsondoc import quote, size_text
from ..tempfiles import describe
from .schema import Problem, Record, checks, field, is_record, json_schema, record, validate
from .schema import fields as record_fields
from .schema import members as union_members

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
SUBST_RE = re.compile(r"\$\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::([^}]*))?\}\}")
SHA256_RE = re.compile(r"^(sha256:)?[0-9a-f]{64}$")
SIGNAL_RE = re.compile(r"^(SIG[A-Z0-9+-]+|[0-9]+)$")
PORT_RE = re.compile(r"^[0-9]{1,5}(/(tcp|udp|sctp))?$")
MODE_RE = re.compile(r"(0o|0)?([0-7]{3,4})")  # a quoted mode: octal, always
PLAIN_MODE_RE = re.compile(r"0[0-7]{3,4}")  # an unquoted one: only with its leading 0
RECIPE_LIMIT = 4 << 20  # bytes of a recipe file
VALUES_LIMIT = 200_000  # values in a recipe, aliases expanded (``*a`` counts a's values again)
SHOWN_PROBLEMS = 100  # problems listed; the rest are counted


class BuildError(UsageError):
    """The recipe cannot be built as written."""


class RecipeError(UsageError):
    """The recipe is invalid; ``problems`` lists every error as ``path: message``. Its
    message is one line for one problem; for several, a header and one line per problem."""

    def __init__(self, problems: list[str], what: str) -> None:
        self.problems = problems
        self.what = what
        super().__init__("\n".join(self.lines()))

    def lines(self, names: Mapping[str, str] | None = None) -> list[str]:
        del names  # the problems name no option
        if len(self.problems) == 1:
            return [f"{self.what}: {self.problems[0]}"]
        shown = [f"  {p}" for p in self.problems[:SHOWN_PROBLEMS]]
        if len(self.problems) > SHOWN_PROBLEMS:
            shown.append(f"  ... and {len(self.problems) - SHOWN_PROBLEMS} more")
        return [f"{self.what}: {len(self.problems)} errors:", *shown]


@record
class Built(Record):
    """Another image of this file, as a base."""

    built: str


@record
class Import(Record):
    """A file, directory or tarball of the build context, copied into the image."""

    src: str = field(description="Path in the build context (relative to it).")
    dest: str | None = field(
        None,
        description="Absolute path in the image. A file goes to DEST (or DEST/NAME when DEST "
        "ends with /); a directory's contents and a tarball's entries go under DEST. Without "
        "it, the import is only visible to run steps, at /ocikit/imports/SRC.",
    )
    mode: int | str | None = field(
        None,
        description='Permission bits of the imported files, octal: quoted ("0755", "755", '
        '"0o755"), or unquoted with its leading 0 (0755). An unquoted 755 is refused: YAML '
        "reads it as the decimal number 755.",
    )
    owner: str | None = field(None, description="UID:GID of every imported entry (default 0:0).")
    sha256: str | None = field(None, description="Pin: the file's or tarball's sha256.")
    extract: bool | None = field(
        None,
        description="Unpack a tarball (default: true for .tar, .tar.gz, .tgz, .tar.zst names).",
    )

    @checks("dest")
    def _absolute(v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must be an absolute path in the image")
        return v

    @checks("mode")
    def _mode(v: int | str | None) -> int | str | None:
        if v is None:
            return v
        if isinstance(v, str):
            m = MODE_RE.fullmatch(v)
            if m is None:
                raise ValueError('must be octal permission bits, like "0644"')
            v = int(m.group(2), 8)
        if not 0 <= v <= 0o7777:
            raise ValueError("must be permission bits between 0 and 07777")
        return v

    @checks("owner")
    def _owner(v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9]{1,10}:[0-9]{1,10}", v):
            raise ValueError("must be UID:GID (numbers)")
        return v

    @checks("sha256")
    def _sha(v: str | None) -> str | None:
        if v is not None and not SHA256_RE.fullmatch(v):
            raise ValueError("must be 64 lowercase hex digits")
        return v.removeprefix("sha256:") if v else v


@record
class ImageConfigSpec(Record):
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

    @checks("exposed_ports")
    def _ports(v: list[str] | None) -> list[str] | None:
        for p in v or []:
            if not PORT_RE.fullmatch(p):
                raise ValueError(f"{quote(p)} is not PORT or PORT/tcp|udp|sctp")
        return v

    @checks("stop_signal")
    def _signal(v: str | None) -> str | None:
        if v is not None and not SIGNAL_RE.fullmatch(v):
            raise ValueError(f"{quote(v)} is not a signal name (SIGTERM) or number")
        return v

    @checks("volumes", "working_dir")
    def _paths(v: Any) -> Any:
        for p in [v] if isinstance(v, str) else v or []:
            if not p.startswith("/"):
                raise ValueError(f"{quote(p)} must be an absolute path")
        return v


@record
class Bind(Record):
    """A host path mounted into run steps."""

    src: str = field(description="Host path (relative: to the build context).")
    dest: str = field(description="Absolute path in the step's container.")
    rw: bool = field(False, description="Writable (default read-only, and part of the key).")

    @checks("dest")
    def _absolute(v: str) -> str:
        if not v.startswith("/") or ".." in v.split("/"):
            raise ValueError("must be an absolute path without '..'")
        return v


@record
class ImageSpec(Record):
    from_: str | Built = field(
        alias="from",
        description="scratch, an ocikit reference (oci:, oci-archive:, docker-archive:, "
        "docker://), or {built: NAME}, another image of this file.",
    )
    build_only: bool = field(False, description="Built and usable as a base, never output.")
    imports: list[Import] = field(factory=list)
    config: ImageConfigSpec = field(factory=ImageConfigSpec)
    os: str | None = field(None, description="Default: the base's, else linux.")
    arch: str | None = field(None, description="Default: the base's, else the host's.")
    variant: str | None = None
    annotations: dict[str, str] | None = field(None, description="Manifest annotations.")
    platform: str | None = field(
        None, description="Of a multi-platform base: which one (os/arch[/variant])."
    )
    run: str | list[str] | None = field(
        None,
        description="Commands run in the image after the imports, in a container: a script, "
        "or a list of commands run one after the other (each by the shell). Their changes "
        "are the image's layer.",
    )
    shell: list[str] | None = field(
        None,
        description="The shell that runs each command, the command appended as its last "
        'argument (default ["/bin/sh", "-e", "-c"]: a command that fails fails the step; '
        '["/bin/sh", "-c"] keeps going). Its program must be in the image.',
    )
    network: Literal["none", "host"] = field(
        "none", description="none: a network namespace with only loopback; host: the host's."
    )
    binds: list[Bind] = field(factory=list, description="Host paths mounted for run.")
    cache: bool = field(True, description="false: the run steps always run (never cached).")


@record
class Recipe(Record):
    version: Literal[1] = field(1, description="The recipe format's version.")
    images: dict[str, ImageSpec]


@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    path: Path  # absolute; ``from:`` paths are relative to its directory
    context: Path  # absolute; imports and binds are relative to it

    @property
    def images(self) -> Mapping[str, ImageSpec]:
        return self.recipe.images

    @property
    def directory(self) -> Path:
        return self.path.parent


def recipe_schema() -> dict[str, Any]:
    return json_schema(Recipe)


def parse_substitutions(pairs: list[str], files: list[str]) -> dict[str, str]:
    """``VAR=VALUE`` pairs (later ones win) after the files' lines (``VAR=VALUE``, # comments)."""
    values: dict[str, str] = {}
    for path in files:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise UsageError(Option("substitute_files"), f" {path}: {e.strerror or e}") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            _put(values, line, f"{path}:{n}")
    for pair in pairs:
        _put(values, pair, Option("substitutions"))
    return values


def _put(values: dict[str, str], pair: str, what: str | Option) -> None:
    name, sep, value = pair.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise UsageError(what, f": expected VAR=VALUE, got {quote(pair)}")
    values[name] = value


def load_recipe(
    path: str | os.PathLike[str],
    substitutions: Mapping[str, str] | None = None,
    context: str | os.PathLike[str] | None = None,
    targets: Sequence[str] = (),
) -> LoadedRecipe:
    """Read, substitute and validate the recipe; RecipeError lists every problem. The
    imports' files are looked for in ``context`` (default: the recipe's directory) for the
    images that will be built (all, or ``targets`` and their bases); ``from:`` paths are
    relative to the recipe's directory. Relative ``path`` and ``context`` are taken from the
    working directory now: the result holds them absolute."""
    path = Path(path)
    what = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(RECIPE_LIMIT + 1)
        if len(raw) > RECIPE_LIMIT:
            raise UsageError(f"{what}: the recipe is larger than {size_text(RECIPE_LIMIT)}")
        text = raw.decode()
    except FileNotFoundError:
        raise UsageError(f"{what}: no such recipe file") from None
    except IsADirectoryError:
        raise UsageError(f"{what}: is a directory, not a recipe file") from None
    except OSError as e:
        raise UsageError(f"{what}: cannot read the recipe ({describe(e)})") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{what}: the recipe is not UTF-8 (byte {e.start})") from None
    problems: list[str] = []
    refused: set[str] = set()  # paths whose error is said: no follow-up there
    data = _parse(text, what, problems, refused)
    data = _substitute(data, dict(substitutions or {}), "", problems, refused)
    later: list[str] = []
    recipe = None
    if not isinstance(data, dict):
        later.append("images: the recipe needs a mapping of images")
    else:
        recipe, found = validate(Recipe, data)
        later.extend(_validation_problems(found))
    path = path.absolute()
    ctx = Path(context).absolute() if context is not None else path.parent
    if isinstance(data, dict) and isinstance(data.get("images"), dict):
        later.extend(_semantic(data["images"], ctx, path.parent, targets))
    problems.extend(p for p in later if not _under(p.split(": ", 1)[0], refused))
    if problems:
        raise RecipeError(problems, what)
    assert recipe is not None
    return LoadedRecipe(recipe, path, ctx)


def _under(where: str, paths: set[str]) -> bool:
    """Whether ``where`` is one of ``paths`` or inside one."""
    while True:
        if where in paths:
            return True
        cut = max(where.rfind("."), where.rfind("["))
        if cut <= 0:
            return False
        where = where[:cut]


# -- reading the YAML ------------------------------------------------------------------------

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
# what a plain scalar may resolve to besides text: where the schema wants text, its text
_AS_WRITTEN = {_INT, "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
               "tag:yaml.org,2002:timestamp"}  # fmt: skip


try:  # libyaml's parser: a recipe of 1,000 images (1.1 MB) is read in 0.9 s instead of 3 s
    from yaml import CSafeLoader as _Parser
except ImportError:  # a PyYAML built without libyaml: its Python parser, the same nodes
    from yaml import SafeLoader as _Parser  # type: ignore[assignment]


class _Loader(_Parser):
    """PyYAML's safe loader (YAML 1.1 types, merge keys), its document checked as nodes
    against the schema before it is made into values (``_Walk``). A plain scalar's style is
    None from PyYAML's Python parser and "" from libyaml's: ``not node.style`` is both."""


def _parse(text: str, what: str, problems: list[str], refused: set[str]) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        walk = _Walk(loader, problems, refused)
        size = walk.size(node)
        if size is None or size > VALUES_LIMIT:
            why = "an alias inside itself" if size is None else "aliases expanded"
            raise RecipeError([f"more than {VALUES_LIMIT} values ({why})"], what)
        walk.node(node, Recipe, "")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError([f"not valid YAML{where}: {getattr(e, 'problem', e)}"], what) from None
    except RecursionError:
        raise RecipeError(["not valid YAML: nested too deeply"], what) from None
    finally:
        loader.dispose()


class _Walk:
    """The document's nodes, along the schema: a key written twice (at any level, merge keys
    included) is an error naming both lines; a plain scalar YAML would read as a number, a
    boolean or a date where the schema wants text becomes its text; a ``mode`` keeps only
    the unquoted forms that mean one thing. Each node is visited once per type (an alias
    is not walked again), and the values the document stands for are counted."""

    def __init__(self, loader: _Loader, problems: list[str], refused: set[str]) -> None:
        self.loader = loader
        self.problems = problems
        self.refused = refused
        self.seen: set[tuple[int, int]] = set()
        self.sizes: dict[int, int | None] = {}

    def node(self, node: yaml.Node, ann: Any, where: str) -> None:
        if (id(node), id(ann)) in self.seen:
            return
        self.seen.add((id(node), id(ann)))
        members = _members(ann)
        if isinstance(node, yaml.ScalarNode):
            if node.tag in _AS_WRITTEN and not node.style and _wants_text(members):
                node.tag = _STR
            return
        if isinstance(node, yaml.SequenceNode):
            item = next((get_args(m)[0] for m in members if get_origin(m) is list), None)
            for i, child in enumerate(node.value):
                self.node(child, item, f"{where}[{i}]")
            return
        if not isinstance(node, yaml.MappingNode):
            return
        model = next((m for m in members if is_record(m)), None)
        mapping = next((get_args(m) for m in members if get_origin(m) is dict), None)
        lines: dict[tuple[str, str], list[int]] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if mapping and key.tag in _AS_WRITTEN and not key.style:
                    key.tag = _STR
                lines.setdefault((key.tag, key.value), []).append(key.start_mark.line + 1)
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            if key.tag == _MERGE:  # its mappings are of the same type
                for merged in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                    self.node(merged, ann, where)
                continue
            inner = _join(where, name)
            if model is Import and name == "mode":
                self._mode(value, inner)
            elif model is not None:
                known = _field(model, name)
                self.node(value, known.annotation if known else None, inner)
            else:
                self.node(value, mapping[1] if mapping else None, inner)
        for (_tag, name), at in lines.items():
            if len(at) > 1:
                times = "twice" if len(at) == 2 else f"{len(at)} times"
                shown = ", ".join(map(str, at[:-1])) + f" and {at[-1]}"
                self.problems.append(f"{_join(where, name)}: defined {times} (lines {shown})")

    def _mode(self, node: yaml.Node, where: str) -> None:
        """``mode``: a quoted octal string (the validator reads it), or an unquoted number
        whose text is octal with its leading 0 (YAML 1.1 reads 0755 as octal, YAML 1.2 as
        decimal: the text, taken as octal, is what both mean to a reader)."""
        if not isinstance(node, yaml.ScalarNode) or node.tag in (_STR, _NULL):
            return
        if node.tag == _INT and not node.style and PLAIN_MODE_RE.fullmatch(node.value):
            node.tag = _STR
            return
        text = node.value
        if node.tag == _INT:
            value = self.loader.construct_yaml_int(node)
            kind = "the decimal number" if text.isdigit() else "the number"
            read = f"{kind} {value} = 0o{value:o}" if value >= 0 else f"the number {value}"
        else:
            read = f"a {node.tag.rsplit(':', 1)[-1]}"
        octal = re.fullmatch(r"[0-7]{3,4}", text)
        hint = f'write "0{text}"' if octal else 'write the bits in octal, quoted, like "0755"'
        self.problems.append(
            f"{where}: {quote(text)[1:-1]} without quotes is ambiguous (YAML reads it as "
            f"{read}); {hint}"
        )
        self.refused.add(where)
        node.tag = _STR  # said once: the validator does not say it again

    def size(self, node: yaml.Node) -> int | None:
        """How many values ``node`` stands for, its aliases expanded; None for a node that
        holds itself (through an alias), which has no end."""
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        self.sizes[key] = None  # while it is counted
        size = 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        for child in children:
            n = self.size(child)
            if n is None:
                return None
            size = min(size + n, VALUES_LIMIT + 1)
        self.sizes[key] = size
        return size


def _members(ann: Any) -> list[Any]:
    """The types of a field's annotation (the members of a union), None left out."""
    if ann is None:
        return []
    return [a for a in union_members(ann) if a is not type(None)]


def _wants_text(members: list[Any]) -> bool:
    return str in members and not any(m in (int, float, bool) for m in members)


def _field(model: type[Record], name: str) -> Any:
    return next((f for f in record_fields(model) if f.key == name), None)


def _substitute(
    node: Any, values: dict[str, str], where: str, problems: list[str], unset: set[str]
) -> Any:
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in values:
                return values[name]
            if default is not None:
                return default
            problems.append(f"{where or '.'}: ${{{{{name}}}}} is not set and has no default")
            unset.add(where or ".")
            return m.group(0)

        return SUBST_RE.sub(repl, node)
    if isinstance(node, dict):
        return {
            k: _substitute(v, values, _join(where, str(k)), problems, unset)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            _substitute(v, values, f"{where}[{i}]", problems, unset) for i, v in enumerate(node)
        ]
    return node


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _validation_problems(errors: list[Problem]) -> list[str]:
    """The schema's errors as ``path: message``: an unknown field with the close known one
    first; a required field whose misspelling was just named is not said again."""
    problems = []
    suggested: set[tuple[Any, ...]] = set()
    for err in errors:
        if err.kind == "extra_forbidden":
            close = difflib.get_close_matches(str(err.loc[-1]), err.known)
            if close:
                suggested.add((*err.loc[:-1], close[0]))
            problems.append(_format(err, close[0] if close else None))
    for err in errors:
        if err.kind == "missing" and err.loc in suggested:
            continue
        if err.kind != "extra_forbidden":
            problems.append(_format(err))
    return problems


def _format(err: Problem, close: str | None = None) -> str:
    where = ""
    for part in err.loc:
        where = f"{where}[{part}]" if isinstance(part, int) else _join(where, part)
    message = err.message
    if err.kind == "extra_forbidden":
        message = "unknown field" + (f" (did you mean {quote(close)}?)" if close else "")
    elif err.kind == "missing" and where == "images":
        message = "the recipe needs a mapping of images"
    elif err.kind == "string_type" and err.input is None:
        message = 'has no value (YAML reads an empty value or ~ as null); write "" for no text'
    return f"{where or '.'}: {message}"


def _semantic(
    images: dict[str, Any], context: Path, directory: Path, targets: Sequence[str]
) -> list[str]:
    """Names, bases (unknown, cycles; paths relative to the recipe's ``directory``), run
    steps' shapes, imports (present in the context, pins), read from the raw data so that an
    image with a schema error is checked as far as it can be."""
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
            problems.extend(_check_reference(base, f"{where}.from", directory))
        problems.extend(_check_run(spec.get("run"), f"{where}.run"))
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


def _check_run(run: Any, where: str) -> list[str]:
    """A command that begins with '-' is an option to the shell (``sh -c -e``), never a
    command: mostly a test, ``run: [ -e /x ]``, that YAML read as a list of one string."""
    problems = []
    for i, command in enumerate(run if isinstance(run, list) else [run]):
        if not isinstance(command, str) or not command.startswith("-"):
            continue
        at = f"{where}[{i}]" if isinstance(run, list) else where
        said = f"{at}: {quote(command)} begins with '-', which the shell takes for an option"
        if isinstance(run, list) and len(command) <= 80 and command.isprintable():
            said += (
                f"; unquoted, [ {command} ] is a YAML list, not a test: quote the command "
                f'(run: ["[ {command} ]"]) or write a block scalar (run: |)'
            )
        problems.append(said)
    return problems


def _check_reference(text: str, where: str, directory: Path) -> list[str]:
    from ..transports import parse_reference

    try:
        ref = parse_reference(text)
    except UsageError as e:
        return [f"{where}: {e}"]
    if ref.is_stdio:
        return [f"{where}: a base cannot be read from standard input"]
    if ref.properties.local_path:
        path = Path(ref.path)
        if not path.is_absolute():
            path = directory / path
        if not path.exists():
            shown = quote(ref.path)
            return [f"{where}: {shown} does not exist (relative to the recipe's directory)"]
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
