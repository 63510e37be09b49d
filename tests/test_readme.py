"""README and the docs pages against the code they describe: every ``hmdiff`` line of their bash
blocks is one the command line accepts (a renamed command or option fails here, not in a
reader's shell), README's Python API runs, README stays a short front page (the detail lives in
docs/) with its measured figures in one block, and every relative link reaches a file and, where
it names one, a heading."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 200
FIGURES = ("<!-- figures:readme -->", "<!-- /figures:readme -->")  # the block README's measured figures live in

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def code_blocks(page: pathlib.Path, language: str):
    """(line number, text) of each fenced block of ``language`` in ``page``."""
    text = page.read_text(encoding="utf-8")
    for block in FENCE.finditer(text):
        if block.group(1) == language:
            yield text.count("\n", 0, block.start(2)) + 1, block.group(2)


def hmdiff_commands(page: pathlib.Path):
    """(``page:line``, arguments) of every ``hmdiff`` command in the page's bash blocks:
    continued lines joined, ``&&``, ``||``, ``;`` and ``|`` split, comments dropped, and an
    optional part written ``[--option VALUE]`` taken as given."""
    for first, block in code_blocks(page, "bash"):
        logical = []  # (line number, text): a line ending in a backslash goes on on the next
        for number, line in enumerate(block.split("\n"), first):
            if logical and logical[-1][1].endswith("\\"):
                logical[-1] = (logical[-1][0], logical[-1][1][:-1] + " " + line)
            else:
                logical.append((number, line))
        for number, line in logical:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command = []
            for word in [*lexer, ";"]:
                if word in ("&&", "||", ";", "|"):
                    if command[:1] == ["hmdiff"]:
                        args = [w.strip("[]") for w in command[1:] if w not in ("[", "]")]
                        yield f"{page.relative_to(ROOT)}:{number}", args
                    command = []
                else:
                    command.append(word)


COMMANDS = [c for page in PAGES for c in hmdiff_commands(page)]


@functools.cache
def strict_parser() -> argparse.ArgumentParser:
    """The ``hmdiff`` parser with abbreviations off: a page spells options in full (an option
    renamed to a longer name would otherwise still take the old one as its abbreviation)."""
    from hmdiff_ros.cli import build_parser

    parser = build_parser()
    todo = [parser]
    while todo:
        p = todo.pop()
        p.allow_abbrev = False
        todo += [sub for a in p._actions if isinstance(a, argparse._SubParsersAction) for sub in a.choices.values()]
    return parser


def parse_error(args: list) -> str | None:
    """Why the ``hmdiff`` parser refuses ``args``, or None; nothing runs (the parser only
    reads the words: its commands run from ``main``)."""
    from hmdiff_ros.cli.common import OptionError

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            strict_parser().parse_args(args)
    except SystemExit as exc:
        return err.getvalue().strip() or f"exit {exc.code}"
    except OptionError as exc:
        return str(exc)
    return None


def test_the_pages_show_hmdiff_commands():
    """The extraction finds what it checks: README's set-up command and the docs' commands."""
    where = {name.split(":")[0] for name, _ in COMMANDS}
    assert {"README.md", "docs/usage.md", "docs/deployment.md", "docs/training.md", "docs/ros.md"} <= where
    assert ("README.md", ["demo"]) in [(name.split(":")[0], args) for name, args in COMMANDS]


@pytest.mark.parametrize("args", [args for _, args in COMMANDS], ids=[name for name, _ in COMMANDS])
def test_every_hmdiff_line_parses(args):
    assert parse_error(args) is None, f"hmdiff {shlex.join(args)}: {parse_error(args)}"


def test_a_renamed_option_or_command_is_refused():
    """The check above has teeth: the parser refuses what a stale page would show."""
    assert parse_error(["run", "photo.jpg", "--hfov", "65"]) is None
    assert "--hfov-deg" in parse_error(["run", "photo.jpg", "--hfov-deg", "65"])
    assert "--hyp" in parse_error(["run", "photo.jpg", "--hyp", "4"])  # abbreviated: spelled out on a page
    assert "invalid choice" in parse_error(["export-onnx", "--out", "engines"])


def test_readme_is_a_short_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README has {len(lines)} lines; move detail into docs/"
    assert [lines.count(marker) for marker in FIGURES] == [1, 1], "README's figures live in one marked block"
    assert lines.index(FIGURES[0]) < lines.index(FIGURES[1])


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="mediapipe is not installed")
def test_the_python_api_in_the_readme_runs(monkeypatch):
    """README's Python example, as written, from the repository root: it finds the demo
    photo's person and gives the joints and mesh it names."""
    monkeypatch.chdir(ROOT)
    (_, code), *others = code_blocks(README, "python")
    assert not others, "README shows one Python example"
    names = {}
    exec(compile(code, str(README), "exec"), names)
    person = names["person"]  # the loop ran: a person was found
    assert person.joints.shape == (25, 3) and person.joint_std.shape == (25,)
    assert person.vertices.shape == (13718, 3)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text, lower case, without punctuation, spaces as ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: pathlib.Path) -> set:
    seen, found = {}, set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)  # repeats get -1, -2, ...
        seen[base] = seen.get(base, 0) + 1
    return found


def relative_links(page: pathlib.Path):
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    for target in LINK.findall(text):
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            yield target


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_reaches_a_file_and_heading(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"
