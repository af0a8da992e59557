"""The documentation stays honest: every hook is documented, marked examples run, links resolve, flags are listed.

Marking examples in docs/*.md (the marker is the nearest non-blank line above the opening fence):

- ``<!-- test -->`` above a ```python block: executed; the blocks of one page share a namespace, in page order;
- ``<!-- test -->`` above a ```bash block: run with ``bash -euo pipefail`` and the running Python's scripts on PATH;
- ``<!-- test-file: NAME -->`` above any block: written to NAME (and importable) before the page's examples run.

Each page's examples run in a fresh temporary directory, which is also the working directory.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!--\s*(?:(test)|test-file:\s*(\S+))\s*-->$")
RUNNABLE_PAGES = ("writing-a-generator.md", "writing-a-task.md")  # must hold runnable Python examples


def fenced_blocks(text: str) -> list[dict]:
    """Fenced code blocks: {"lang", "code", "line", "marker", "file"} (marker: "test", "file" or None)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("```"):
            i += 1
            continue
        lang, start = line[3:].strip(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        above = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        match = MARKER.match(above)
        marker = None if match is None else ("test" if match.group(1) else "file")
        out.append({"lang": lang, "code": "\n".join(body) + "\n", "line": start + 1, "marker": marker,
                    "file": match.group(2) if match else None})
    return out


def prose(text: str) -> str:
    """The Markdown outside fenced code blocks (where links and headings live)."""
    kept, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            kept.append(line)
    return "\n".join(kept)


def headings(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+)$", prose(text), re.MULTILINE)]


def slugs(text: str) -> set[str]:
    """GitHub-style anchors of a page's headings."""
    seen: dict[str, int] = {}
    out = set()
    for title in headings(text):
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


# ---------------------------------------------------------------------------------------------------------------------
# (1) every hookspec has a heading in docs/hooks.md
# ---------------------------------------------------------------------------------------------------------------------


def hookspec_names() -> list[str]:
    tree = ast.parse((ROOT / "negmine" / "hookspecs.py").read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(d, ast.Name) and d.id == "hookspec" for d in node.decorator_list)
    ]


def test_every_hookspec_has_a_heading_in_hooks_md():
    names = hookspec_names()
    assert len(names) >= 9 and all(n.startswith("negmine_") for n in names)
    titles = {t.replace("`", "") for t in headings((DOCS / "hooks.md").read_text())}
    missing = [n for n in names if n not in titles]
    assert not missing, f"docs/hooks.md has no heading for {missing}"


# ---------------------------------------------------------------------------------------------------------------------
# (2) marked examples run
# ---------------------------------------------------------------------------------------------------------------------


def pages_with_examples() -> list[str]:
    return [p.name for p in doc_pages() if any(b["marker"] for b in fenced_blocks(p.read_text()))]


def test_runnable_pages_have_python_examples():
    for name in RUNNABLE_PAGES:
        blocks = fenced_blocks((DOCS / name).read_text())
        assert any(b["marker"] == "test" and b["lang"] == "python" for b in blocks), name


@pytest.mark.parametrize("page", pages_with_examples())
def test_marked_examples_run(page, tmp_path, monkeypatch):
    blocks = fenced_blocks((DOCS / page).read_text())
    files = [b for b in blocks if b["marker"] == "file"]
    for block in files:
        (tmp_path / block["file"]).write_text(block["code"])
    modules = [Path(b["file"]).stem for b in files if b["file"].endswith(".py")]
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {"OMP_NUM_THREADS": "1", **os.environ}  # one thread per example process: no contention on small CPUs
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    namespace: dict = {"__name__": f"docs_example_{Path(page).stem.replace('-', '_')}"}
    try:
        for block in blocks:
            if block["marker"] != "test":
                continue
            where = f"docs/{page}, block at line {block['line']}"
            if block["lang"] == "python":
                exec(compile(block["code"], where, "exec"), namespace)
            elif block["lang"] in ("bash", "sh", "shell"):
                proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block["code"]], cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=600)
                assert proc.returncode == 0, f"{where} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            else:
                pytest.fail(f"{where}: cannot run a {block['lang']!r} block marked <!-- test -->")
    finally:
        for name in modules:
            sys.modules.pop(name, None)


# ---------------------------------------------------------------------------------------------------------------------
# (3) relative links resolve
# ---------------------------------------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", prose(path.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", [ROOT / "README.md", *doc_pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page):
    problems = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            problems.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in slugs(dest.read_text()):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not problems, f"{page.name}:\n" + "\n".join(problems)


def test_index_links_every_page():
    linked = {t.partition("#")[0] for t in relative_links(DOCS / "index.md")}
    assert {p.name for p in doc_pages()} - {"index.md"} <= linked


# ---------------------------------------------------------------------------------------------------------------------
# (4) every built-in flag and config key is in docs/cli.md
# ---------------------------------------------------------------------------------------------------------------------


def mentions(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def test_every_builtin_flag_is_in_cli_md():
    """Flags of `negmine train` and of every other built-in command (generator flags are generated, not listed)."""
    import click

    from negmine.cli import cli, commands

    builtin = [c for c in vars(commands).values() if isinstance(c, click.Command)]
    assert "train" in {c.name for c in builtin}
    text = (DOCS / "cli.md").read_text()
    missing = []
    for command in (*builtin, cli):
        for param in command.params:  # the built-in ones; generated generator flags are not in .params
            if isinstance(param, click.Option):
                names = param.opts + param.secondary_opts
            else:
                names = [param.human_readable_name]
            missing += [f"{command.name}: {n}" for n in names if not mentions(text, n)]
    assert not missing, f"docs/cli.md does not mention {missing}"


def test_every_config_key_is_in_cli_md():
    from negmine.config import config_help

    text = (DOCS / "cli.md").read_text()
    missing = [key for key in config_help() if f"`{key}`" not in text]
    assert not missing, f"docs/cli.md does not list the config keys {missing}"
