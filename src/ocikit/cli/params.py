"""Usage errors in ocikit's words: the parameter types of the commands say what they expected
(``expected tar or squashfs``), and ``usage_message`` turns click's exceptions into the one
format of every error, ``WHAT: WHY`` (``copy --jobs '0': expected a whole number from 1 to
64``), never click's wording (``Invalid value for '--jobs'``).

``worded(group)`` gives every parameter of every command its worded type, once, after the
commands are defined: the decorators stay click's own.
"""

from __future__ import annotations

import re
from typing import Any

import click

from ..model.jsondoc import quote


class Worded(click.BadParameter):
    """A value refused: ``value`` and why (``expected ...``)."""

    def __init__(self, value: Any, why: str, ctx: click.Context | None, param: Any) -> None:
        super().__init__(why, ctx, param)
        self.value = value
        self.why = why


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" or {items[-1]}"


class _Expects(click.ParamType):
    """A click type whose refusal says what was expected (``expected(message)``, from
    click's own message where it tells more)."""

    def expected(self, message: str) -> str:
        raise NotImplementedError

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            raise Worded(value, self.expected(e.message), ctx, param) from None


class Choice(_Expects, click.Choice):
    def expected(self, message: str) -> str:
        return f"expected {_words([str(c) for c in self.choices])}"


class Bool(_Expects, click.types.BoolParamType):
    def expected(self, message: str) -> str:
        return "expected true or false"


class Int(_Expects, click.types.IntParamType):
    def expected(self, message: str) -> str:
        return "expected a whole number"


class IntRange(_Expects, click.IntRange):
    def expected(self, message: str) -> str:
        return f"expected a whole number{_range(self)}"


class FloatRange(_Expects, click.FloatRange):
    def expected(self, message: str) -> str:
        return f"expected a number{_range(self)}"


def _range(t: click.IntRange | click.FloatRange) -> str:
    low, high = t.min, t.max
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f", at least {low:g}"
    if high is not None:
        return f", at most {high:g}"
    return ""


class Path(_Expects, click.Path):
    def expected(self, message: str) -> str:
        return _path_why(message)


def _path_why(message: str) -> str:
    """click's sentence about a path, as the end of ours."""
    for pattern, why in (
        (r"is a file", "is a file, not a directory"),
        (r"is a directory", "is a directory, not a file"),
        (r"does not exist", "does not exist"),
        (r"not readable", "cannot be read (permission denied)"),
        (r"not writable", "cannot be written (permission denied)"),
    ):
        if re.search(pattern, message):
            return why
    return message[:1].lower() + message[1:].rstrip(".")


def _worded_type(t: click.ParamType) -> click.ParamType:
    if isinstance(t, _Expects):  # worded already
        return t
    if isinstance(t, click.Choice):
        return Choice(list(t.choices), case_sensitive=t.case_sensitive)
    if isinstance(t, click.types.BoolParamType):
        return Bool()
    if isinstance(t, click.IntRange):
        return IntRange(t.min, t.max, min_open=t.min_open, max_open=t.max_open, clamp=t.clamp)
    if isinstance(t, click.FloatRange):
        return FloatRange(t.min, t.max, min_open=t.min_open, max_open=t.max_open, clamp=t.clamp)
    if isinstance(t, click.types.IntParamType):
        return Int()
    if isinstance(t, click.Path):
        return Path(
            exists=t.exists,
            file_okay=t.file_okay,
            dir_okay=t.dir_okay,
            readable=t.readable,
            writable=t.writable,
            executable=t.executable,
            resolve_path=t.resolve_path,
            allow_dash=t.allow_dash,
            path_type=t.type,
        )
    return t


def worded(group: click.Group) -> None:
    """Every parameter of every command of ``group`` with its worded type."""
    for command in [group, *group.commands.values()]:
        for param in command.params:
            param.type = _worded_type(param.type)


def usage_message(e: click.UsageError) -> str:
    """click's exception as ``WHAT: WHY``."""
    ctx = e.ctx
    command = ctx.command_path.removeprefix("ocikit").strip() if ctx is not None else ""
    command = command or getattr(e, "command_name", "")
    usage = ""
    if ctx is not None:
        usage = ctx.get_usage().removeprefix("Usage: ").strip()
    where = f"{command}: " if command else ""
    if isinstance(e, click.MissingParameter) and e.param is not None:
        if isinstance(e.param, click.Argument):
            return f"{where}{e.param.human_readable_name} is missing (usage: {usage})"
        return f"{where}{_label(e.param)} is needed"
    if isinstance(e, Worded) and e.param is not None:
        head = f"{command} {_label(e.param)}".strip()
        return f"{head} {quote(str(e.value))}: {e.why}"
    if isinstance(e, click.NoSuchOption):
        hint = f"see ocikit {command} --help" if command else "see ocikit --help"
        import difflib  # here, as below: only a mistyped name needs suggestions

        close = difflib.get_close_matches(e.option_name, e.possibilities or [], n=1)
        if close:
            hint = f"did you mean {close[0]}?"
        return f"{where}no option {e.option_name} ({hint})"
    if isinstance(e, click.BadOptionUsage) and "requires an argument" in e.message:
        return f"{command} {e.option_name}: needs a value".strip()
    if isinstance(e, click.BadParameter) and e.param is not None:
        why = e.message[:1].lower() + e.message[1:].rstrip(".")
        return f"{command} {_label(e.param)}: {why}".strip()
    extra = re.fullmatch(r"Got unexpected extra arguments? \((.*)\)", e.message)
    if extra:
        count = len(extra.group(1).split(" "))
        what = "one argument too many" if count == 1 else f"{count} arguments too many"
        return f"{where}{what}: {quote(extra.group(1))} (usage: {usage})"
    message = e.message[:1].lower() + e.message[1:].rstrip(".")
    if "; " in message or "(" in message:  # ocikit's own words, complete
        return f"{where}{message}"
    return f"{where}{message}" + (f" (see 'ocikit {command} --help')" if command else "")


def _label(param: Any) -> str:
    if isinstance(param, click.Option):
        longs = [o for o in param.opts if o.startswith("--")]
        return (longs or param.opts)[0]
    return str(param.human_readable_name)


class Group(click.Group):
    """Commands looked up with a suggestion for a misspelling (``chek``: check); a usage
    error found while a command's options are parsed knows the command."""

    def invoke(self, ctx: click.Context) -> Any:
        args = [*getattr(ctx, "_protected_args", ()), *ctx.args]  # before click takes them
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            if e.ctx is None:
                e.command_name = args[0] if args else ""  # type: ignore[attr-defined]
            raise

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            names = sorted(self.list_commands(ctx))
            import difflib

            close = difflib.get_close_matches(name, names, n=1)
            hint = (
                f" (did you mean {close[0]}?)" if close else f"; the commands: {', '.join(names)}"
            )
            raise click.UsageError(f"no command {quote(name)}{hint}", ctx)
        return super().resolve_command(ctx, args)
