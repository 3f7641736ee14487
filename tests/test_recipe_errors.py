"""Recipes that never surprise (issue 13): what YAML would silently change is refused or
taken as written, every error is named where it is (one per line, no follow-ups), an import
that would replace a symlinked directory is stopped when it is placed, and relative paths mean
one thing each (``from:`` the recipe's directory, imports the context, options the cwd).

In process: ``load_recipe``, the Python API and the CLI's ``_dispatch``; no runtime. Every
test runs with each YAML parser ocikit may get: libyaml's (PyYAML's C loader, the default)
and PyYAML's Python parser (its fallback when PyYAML is built without libyaml)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import ocikit
from ocikit.build import BuildError, RecipeError, load_recipe
from ocikit.build import recipe as recipe_module
from ocikit.build.recipe import Import
from ocikit.cli.main import _dispatch
from support.layouts import directory, file, symlink, tar_bytes, write_layout


@pytest.fixture(autouse=True, params=["libyaml", "python"])
def yaml_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The recipe read by libyaml's parser (the default) or by PyYAML's Python parser."""
    if request.param == "python":

        class PythonLoader(yaml.SafeLoader):
            pass

        monkeypatch.setattr(recipe_module, "_Loader", PythonLoader)
    elif not yaml.__with_libyaml__:
        pytest.skip("PyYAML is built without libyaml here")
    else:
        assert issubclass(recipe_module._Loader, yaml.CSafeLoader)
    yield request.param


def recipe(tmp: Path, text: str, name: str = "ocikit.yaml") -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(path: Path, **kw: object) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, **kw)  # type: ignore[arg-type]
    return info.value.problems


def usrmerged(layout: Path) -> None:
    write_layout(
        layout,
        [
            tar_bytes(
                [
                    directory("usr"),
                    directory("usr/bin"),
                    file("usr/bin/sh", "#!sh", 0o755),
                    symlink("bin", "usr/bin"),
                ]
            )
        ],
        ref="base",
    )


# -- 1. duplicate keys -------------------------------------------------------------------------


def test_duplicate_keys_are_refused_at_every_level(tmp_path: Path) -> None:
    path = recipe(
        tmp_path,
        """images:
  app:
    from: scratch
    config:
      env: {A: "1", A: "2"}
  other:
    from: scratch
  app:
    from: scratch
    imports:
      - src: f
        dest: /f
        dest: /g
""",
    )
    (tmp_path / "f").write_text("f")
    found = problems(path)
    assert "images.app: defined twice (lines 2 and 8)" in found
    assert "images.app.imports[0].dest: defined twice (lines 12 and 13)" in found
    assert "images.app.config.env.A: defined twice (lines 5 and 5)" in found
    assert len(found) == 3, found


def test_merge_keys_merge_and_written_keys_win(tmp_path: Path) -> None:
    path = recipe(
        tmp_path,
        """images:
  a: &common
    from: scratch
    config: {user: "1", cmd: [x]}
  b:
    <<: *common
    config: {user: "2"}
""",
    )
    loaded = load_recipe(path)
    assert loaded.images["b"].config.user == "2"
    assert loaded.images["b"].config.cmd is None  # config replaced whole, as written
    assert loaded.images["b"].from_ == "scratch"
    path.write_text("images:\n  a:\n    <<: {from: scratch}\n    <<: {build_only: true}\n")
    assert problems(path) == ["images.a.<<: defined twice (lines 3 and 4)"]


# -- 2. shapes YAML makes of commands ----------------------------------------------------------


def test_a_test_command_that_yaml_read_as_a_list(tmp_path: Path) -> None:
    path = recipe(
        tmp_path,
        "images:\n  app:\n    from: scratch\n    run: [ -e /x ]\n"
        "  other:\n    from: scratch\n    run: -x\n",
    )
    found = problems(path)
    assert len(found) == 2, found
    first = next(p for p in found if p.startswith("images.app.run[0]: "))
    assert "'-e /x'" in first and '["[ -e /x ]"]' in first and "quote" in first
    assert any(p.startswith("images.other.run: ") for p in found)


def test_numbers_where_text_is_expected_are_taken_as_written(tmp_path: Path) -> None:
    path = recipe(
        tmp_path,
        "images:\n  app:\n    from: scratch\n    config:\n"
        "      cmd: [sleep, 10, 1.10, 0x1F, yes]\n      user: 1000\n"
        "      env: {V: 1.10, 2: on}\n      stop_signal: 9\n",
    )
    config = load_recipe(path).images["app"].config
    assert config.cmd == ["sleep", "10", "1.10", "0x1F", "yes"]
    assert config.user == "1000" and config.stop_signal == "9"
    assert config.env == {"V": "1.10", "2": "on"}
    path.write_text("images:\n  app:\n    from: scratch\n    config:\n      env: {A: }\n")
    [only] = problems(path)
    assert only.startswith("images.app.config.env.A: ") and "null" in only and '""' in only


# -- 3. modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "bits"),
    [('"0755"', 0o755), ('"755"', 0o755), ('"0o755"', 0o755), ("0o755", 0o755), ("0755", 0o755),
     ('"4755"', 0o4755), ("0644", 0o644), ("'0600'", 0o600)],
)  # fmt: skip
def test_modes_that_mean_one_thing(tmp_path: Path, written: str, bits: int) -> None:
    (tmp_path / "f").write_text("f")
    path = recipe(
        tmp_path,
        f"images:\n  app:\n    from: scratch\n    imports:\n"
        f"      - {{src: f, dest: /f, mode: {written}}}\n",
    )
    assert load_recipe(path).images["app"].imports[0].mode == bits


@pytest.mark.parametrize("written", ["755", "493", "0x1ed", "644", "0", "1_0"])
def test_modes_yaml_would_change_are_refused(tmp_path: Path, written: str) -> None:
    (tmp_path / "f").write_text("f")
    path = recipe(
        tmp_path,
        f"images:\n  app:\n    from: scratch\n    imports:\n"
        f"      - {{src: f, dest: /f, mode: {written}}}\n",
    )
    [only] = problems(path)
    assert only.startswith(f"images.app.imports[0].mode: {written} without quotes"), only
    assert (f'write "0{written}"' if written in ("755", "644") else 'like "0755"') in only


def test_the_python_api_takes_a_mode_as_a_number() -> None:
    assert Import(src="f", dest="/f", mode=0o755).mode == 0o755


# -- 4. unknown keys ---------------------------------------------------------------------------


def test_unknown_keys_are_named_with_the_close_one(tmp_path: Path) -> None:
    path = recipe(tmp_path, "imagez:\n  app:\n    from: scratch\n")
    assert problems(path) == ["imagez: unknown field (did you mean 'images'?)"]
    path.write_text(
        "images:\n  app:\n    from: scratch\n    improts: []\n    config: {entrypiont: [x]}\n"
    )
    found = problems(path)
    assert "images.app.improts: unknown field (did you mean 'imports'?)" in found
    assert "images.app.config.entrypiont: unknown field (did you mean 'entrypoint'?)" in found
    path.write_text("colour: blue\n")
    found = problems(path)
    assert "colour: unknown field" in found and any(p.startswith("images: ") for p in found)


# -- 5. an import over a symlinked directory ---------------------------------------------------


def test_a_file_over_a_symlinked_directory_names_the_import(tmp_path: Path) -> None:
    usrmerged(tmp_path / "base")
    (tmp_path / "tool").write_text("tool")
    path = recipe(
        tmp_path,
        "images:\n  app:\n    from: oci:base:base\n    imports:\n"
        "      - {src: tool, dest: /usr/bin/tool}\n      - {src: tool, dest: /bin}\n",
    )
    options = ocikit.BuildOptions(output=f"oci:{tmp_path / 'out'}", cache_dir=str(tmp_path / "c"))
    with pytest.raises(BuildError) as info:
        ocikit.build(path, options)
    message = str(info.value)
    assert message.startswith("images.app.imports[1] (tool): "), message
    assert "symlink" in message and "/usr/bin" in message and "check" not in message
    assert not (tmp_path / "out").exists()


# -- 6. one error per line, no follow-ups ------------------------------------------------------


def test_an_unset_substitution_has_no_follow_ups(tmp_path: Path) -> None:
    path = recipe(
        tmp_path,
        "images:\n  app:\n    from: oci:${{DIR}}:x\n    imports:\n"
        "      - src: app-${{VERSION}}.tar\n        dest: /opt\n"
        "      - src: f\n        dest: ${{D}}\n",
    )
    (tmp_path / "f").write_text("f")
    found = problems(path)
    assert found == [
        "images.app.from: ${{DIR}} is not set and has no default",
        "images.app.imports[0].src: ${{VERSION}} is not set and has no default",
        "images.app.imports[1].dest: ${{D}} is not set and has no default",
    ]


def test_errors_are_printed_one_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe(
        tmp_path,
        "images:\n  app:\n    from: {built: nowhere}\n    colour: blue\n",
    )
    monkeypatch.chdir(tmp_path)
    assert _dispatch(["build", "-q"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "ocikit: error: ocikit.yaml: 2 errors:", lines
    assert sorted(lines[1:]) == [
        "  images.app.colour: unknown field",
        "  images.app.from: no image named 'nowhere' in this file",
    ]
    # one error: one line
    (tmp_path / "ocikit.yaml").write_text("images:\n  app: {from: scratch, colour: blue}\n")
    assert _dispatch(["build", "-q"]) == 2
    err = capsys.readouterr().err
    assert err == "ocikit: error: ocikit.yaml: images.app.colour: unknown field\n"
    # every line escaped: a name with a terminal escape in it
    (tmp_path / "ocikit.yaml").write_text(
        'images:\n  "a\\x1b[2J": {from: scratch}\n  b: {from: {built: "\\x1b]0;x\\x07"}}\n'
    )
    assert _dispatch(["build", "-q"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and len(err.splitlines()) == 3, err


# -- 7. relative paths -------------------------------------------------------------------------


def test_relative_paths_each_mean_one_thing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``from:`` is relative to the recipe's directory, imports to the context, and
    ``--context``, ``--output`` and ``--cache-dir`` to the working directory."""
    project = tmp_path / "project" / "sub"
    usrmerged(project / "base")
    recipe(
        project,
        "images:\n  app:\n    from: oci:base:base\n    imports:\n"
        "      - {src: tool, dest: /bin/}\n",
    )
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "tool").write_text("tool")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = [
        "build", "-q", "--json", "-f", "../project/sub/ocikit.yaml", "--context", "../ctx",
        "--output", "oci:out", "--cache-dir", "cache",
    ]  # fmt: skip
    assert _dispatch(argv) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in result["images"]] == ["app"]
    assert (elsewhere / "out" / "index.json").is_file() and (elsewhere / "cache").is_dir()
    # the same recipe, from its own directory, with absolute paths
    monkeypatch.chdir(project)
    out = tmp_path / "abs-out"
    argv = ["build", "-q", "--context", str(tmp_path / "ctx"), "--output", f"oci:{out}"]
    assert _dispatch([*argv, "--cache-dir", str(tmp_path / "cache2")]) == 0
    assert (out / "index.json").is_file()


@pytest.mark.parametrize("depth", [200, 5000, 200_000])
def test_a_recipe_nested_too_deeply_is_one_error(tmp_path: Path, depth: int) -> None:
    """Hostile nesting ends as one line from either parser (libyaml stops at its depth limit,
    the Python parser and the schema's walk at Python's), never a crash."""
    path = recipe(tmp_path, "images: " + "[" * depth + "]" * depth + "\n")
    found = problems(path)
    assert len(found) == 1
    if depth > 200:
        assert found[0].startswith("not valid YAML"), found
