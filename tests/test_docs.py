"""The documents stand on their own: nothing points outside the repository, every file and command-line flag that a
command in README.md, BENCHMARKS.md or docs/ names exists, and BENCHMARKS.md stays a results page."""
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "BENCHMARKS.md", "DEVELOPERS.md", *sorted(os.path.relpath(p, REPO) for p in
                                                          glob.glob(os.path.join(REPO, "docs", "*.md")))]
OUTSIDE = ".." + "/shared"  # spelled in two parts, so that this file does not match itself


def _read(path: str) -> str:
    with open(os.path.join(REPO, path), errors="replace") as file:
        return file.read()


def commands(text: str):
    """Shell lines of the code blocks (indented by 4 or fenced) that run a tool of the repository."""
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    lines += [line[4:] for line in text.splitlines() if line.startswith("    ")]
    joined = "\n".join(lines).replace("\\\n", " ")  # continuation lines
    return [line.strip() for line in joined.splitlines() if re.search(r"\btools/\w+(\.py|\.sh)?\b", line)]


def test_nothing_points_outside_the_repository():
    tracked = [p for p in glob.glob(os.path.join(REPO, "**", "*"), recursive=True)
               if os.path.isfile(p) and not os.path.relpath(p, REPO).startswith((".venv", "output", ".git"))
               and p.endswith((".md", ".py", ".sh", ".yaml", ".toml", ".cfg", "Makefile", "run", "when_quiet"))]
    offenders = [os.path.relpath(p, REPO) for p in tracked if OUTSIDE in _read(os.path.relpath(p, REPO))]
    assert not offenders


def _tool_flags(name: str) -> str:
    """The source that defines tools/<name>'s flags: the tool, the sibling modules it imports, the shared parser."""
    source = _read(f"tools/{name}")
    siblings = [m for m in re.findall(r"^from (\w+) import", source, re.M) if os.path.isfile(f"{REPO}/tools/{m}.py")]
    return source + "".join(_read(f"tools/{m}.py") for m in siblings) + _read("resdet/engine/defaults.py") + \
        _read("resdet/utils/cli.py")


def problems(text: str):
    """Files that the commands in `text` name and that do not exist, and flags their tool does not define."""
    missing = []
    for command in commands(text):
        for path in re.findall(r"\b((?:tools|configs|docs)/[\w./-]+\.(?:py|sh|yaml|md))\b", command):
            if not os.path.exists(os.path.join(REPO, path)):
                missing.append(f"{path} ({command[:60]})")
        tool = re.search(r"\btools/(\w+\.py)\b", command)
        if not tool or not os.path.isfile(os.path.join(REPO, "tools", tool.group(1))):
            continue
        defined = _tool_flags(tool.group(1))
        for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", command[tool.end():]):
            if f'"{flag}"' not in defined:
                missing.append(f"{flag} of tools/{tool.group(1)}")
    return missing


@pytest.mark.parametrize("doc", DOCS)
def test_named_tools_configs_and_flags_exist(doc):
    assert not problems(_read(doc)), doc


@pytest.mark.parametrize("doc", DOCS)
def test_links_and_named_paths_exist(doc):
    """Markdown links (relative to the document) and `resdet/...`, `tools/...` paths in code spans point at files."""
    text, folder = _read(doc), os.path.dirname(os.path.join(REPO, doc))
    links = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if not t.startswith(("http://", "https://"))]
    missing = [t for t in links if not os.path.exists(os.path.normpath(os.path.join(folder, t)))]
    spans = re.findall(r"`((?:resdet|tools|configs|tests|docs)/[\w./-]+\.(?:py|yaml|md|sh))`", text)
    missing += [p for p in spans if not os.path.exists(os.path.join(REPO, p))]
    assert not missing, f"{doc}: {missing}"


def test_the_check_reports_a_missing_file_and_flag():
    text = "    python tools/train_det.py --config configs/nope.yaml --no-such-flag OUTPUT_DIR out\n"
    found = problems(text)
    assert len(found) == 2 and found[0].startswith("configs/nope.yaml")
    assert found[1] == "--no-such-flag of tools/train_det.py"


def test_the_commands_are_found():
    # the extraction is not vacuous: the README's quick start and training commands are among them
    found = commands(_read("README.md"))
    assert any("tools/train_det.py" in c for c in found) and any("--suite acceptance" in c
                                                                  for c in commands(_read("BENCHMARKS.md")))


def test_benchmarks_is_a_results_page():
    text = _read("BENCHMARKS.md")
    assert len(text.splitlines()) < 200
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dated sections belong in git history"
