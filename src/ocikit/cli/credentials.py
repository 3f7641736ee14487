"""How the command line obtains credentials and reads its deprecated option spellings.

- ``--creds USER`` (``--src-creds``, ``--dest-creds``) without ``:PASSWORD``: the password is
  asked on the terminal (``/dev/tty``, never echoed, whatever stdin and stdout are), or read
  from standard input with ``--password-stdin`` (at most ``MAX_PASSWORD`` bytes, one
  trailing newline removed); without a terminal (or with stderr not one: nobody watches)
  and without ``--password-stdin``: one line saying what to give. ``--password-stdin`` is
  refused when standard input is the image.
- Deprecated spellings (``deprecated``): hidden options whose value goes to the new one(s),
  with a one-line notice on stderr once the command succeeded (a failure prints its error
  alone); the old and the new spelling together are refused.

Both happen in ``complete`` once the options are parsed, before the command's body runs:
the body sees ``USER:PASSWORD`` as if it had been typed so.
"""

from __future__ import annotations

import getpass
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

import click
from click.core import ParameterSource

from ..errors import OcikitError, UsageError
from ..model.jsondoc import quote

TTY = "/dev/tty"
MAX_PASSWORD = 8 << 10  # bytes (registry tokens used as passwords reach a few KiB)
MAX_USERNAME = 1 << 10
CREDS_PARAMS = ("creds", "src_creds", "dest_creds")
REFERENCE_PARAMS = ("src", "ref")  # positional references that may be standard input
_PASSWORD_STDIN = "ocikit.password_stdin"
_ALIASES = "ocikit.aliases"

F = TypeVar("F", bound=Callable[..., Any])


def _remember_stdin(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta[_PASSWORD_STDIN] = value
    return value


password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    expose_value=False,
    callback=_remember_stdin,
    help="Read the password from standard input (for credentials given as USER alone).",
)


def password_stdin(ctx: click.Context) -> bool:
    return bool(ctx.meta.get(_PASSWORD_STDIN))


def deprecated(old: str, *targets: str, **kw: Any) -> Callable[[F], F]:
    """``old`` as a hidden, deprecated spelling of the options named ``targets`` (their
    parameter names): its value goes to each of them."""

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            ctx.meta.setdefault(_ALIASES, []).append((old, targets, value))
        return value

    return click.option(old, hidden=True, expose_value=False, callback=remember, **kw)


def _option(ctx: click.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name and isinstance(param, click.Option):
            return max(param.opts, key=len)
    return name


def complete(ctx: click.Context) -> list[str]:
    """The deprecated spellings applied, then every ``USER`` given a password; the notices
    to print once the command succeeded (a failure's one line is its error)."""
    notices = []
    for old, targets, value in ctx.meta.get(_ALIASES, []):
        new = " and ".join(_option(ctx, t) for t in targets)
        for target in targets:
            if ctx.get_parameter_source(target) == ParameterSource.COMMANDLINE:
                raise click.UsageError(f"{old} is the old spelling of {new}: give one", ctx)
            ctx.params[target] = value
        notices.append(f"ocikit: warning: {old} is deprecated; use {new}")
    _passwords(ctx)
    return notices


def _passwords(ctx: click.Context) -> None:
    if not any(p.name in CREDS_PARAMS for p in ctx.command.params):
        return  # login reads its own
    wanting: dict[str, list[str]] = {}  # USER -> the options that name it without a password
    for name in CREDS_PARAMS:
        value = ctx.params.get(name)
        if isinstance(value, str) and value and ":" not in value:
            wanting.setdefault(value, []).append(_option(ctx, name))
    if password_stdin(ctx):
        if not wanting:
            raise UsageError(
                "--password-stdin: no --creds USER (without :PASSWORD) to give the password to"
            )
        if len(wanting) > 1:
            named = " and ".join(o for opts in wanting.values() for o in opts)
            raise UsageError(
                f"--password-stdin gives one password, and {named} each want one: "
                f"give USER:PASSWORD to all but one"
            )
        refuse_stdin_image(ctx)
        [user] = wanting
        password = read_password(stdin())
        for name in CREDS_PARAMS:
            if ctx.params.get(name) == user:
                ctx.params[name] = f"{user}:{password}"
        return
    for user, options in wanting.items():
        what = f"{options[0]} {quote(user)}: no password"
        hint = f"give {options[0]} USER:PASSWORD, or the password with --password-stdin"
        password = ask_password(f"Password for {user} ({', '.join(options)}): ", what, hint)
        for name in CREDS_PARAMS:
            if ctx.params.get(name) == user:
                ctx.params[name] = f"{user}:{password}"


def refuse_stdin_image(ctx: click.Context) -> None:
    """--password-stdin when standard input is the image: one line."""
    for name in REFERENCE_PARAMS:
        value = ctx.params.get(name)
        if not isinstance(value, str):
            continue
        try:
            from ..transports.reference import parse_reference

            reads_stdin = parse_reference(value).is_stdio
        except OcikitError:  # said by the command, with the rest of what it checks
            continue
        if reads_stdin:
            raise UsageError(
                f"--password-stdin reads standard input, which {quote(value)} already "
                f"reads the image from; give the password on the terminal or as USER:PASSWORD"
            )


def stdin() -> BinaryIO:
    return sys.stdin.buffer


def read_password(stream: BinaryIO) -> str:
    """The password on ``stream``: everything to its end, one trailing newline (LF or
    CRLF) removed; at most ``MAX_PASSWORD`` bytes."""
    data = stream.read(MAX_PASSWORD + 3)
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if len(data) > MAX_PASSWORD:
        raise UsageError(f"--password-stdin: the password is too long (over {MAX_PASSWORD} bytes)")
    if not data:
        raise UsageError("--password-stdin: standard input holds no password")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise UsageError("--password-stdin: the password is not UTF-8") from None


def _terminal(what: str, hint: str) -> None:
    """A terminal to ask on, or one line saying what to give instead. Asked only when
    stderr is a terminal too: a run whose messages go to a file or a pipe is not watched,
    and would wait for ever (a test suite's, a script's ``2>log``)."""
    try:
        watched = sys.stderr.isatty()
        fd = os.open(TTY, os.O_RDWR | os.O_NOCTTY) if watched else -1
    except (OSError, ValueError):
        fd = -1
    if fd < 0:
        raise UsageError(f"{what}, and no terminal to ask on: {hint}")
    os.close(fd)


def ask_password(prompt: str, what: str, hint: str) -> str:
    """The password typed on the terminal, not echoed (never read where it would show)."""
    _terminal(what, hint)
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)  # never an echoing fallback
        try:
            password = getpass.getpass(prompt)
        except getpass.GetPassWarning:
            raise UsageError(f"the terminal cannot hide the password: {hint}") from None
        except EOFError:
            password = ""
    if not password:
        raise UsageError("no password given")
    if len(password.encode()) > MAX_PASSWORD:
        raise UsageError(f"the password is too long (over {MAX_PASSWORD} bytes)")
    return password


def ask_username(what: str, hint: str) -> str:
    """A user name typed on the terminal (echoed, as docker login asks it)."""
    _terminal(what, hint)
    with open(TTY, "r+b", buffering=0) as tty:
        tty.write(b"Username: ")
        line = tty.readline(MAX_USERNAME + 2)
    user = line.decode(errors="replace").strip()
    if not user:
        raise UsageError("no user name given")
    return user
