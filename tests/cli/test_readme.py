"""README.md must stay true: every `lrpaudit` command in its code blocks runs here with the documented exit code
and output, the Python snippet runs, the YAML examples load, the flags it lists exist.

- ```bash blocks: each `&&`-separated part that starts with `lrpaudit` runs (the `pip install` parts are what
  .ci/run does itself); its exit code is the one the paragraph before the block states ("exits N").
- ``` blocks (console sessions): each `$ lrpaudit ...` line runs; `$ echo $?` and the line after it give the exit
  code; the lines shown must be the output (stdout, then stderr), where a `...` line stands for any lines.
  Timings (`(1.7 s)`) are compared as `#.# s`.
Commands run through CliRunner from a temporary folder that links `sample_models/` (reports they write land there).
They run in README order in one xdist worker (``SERIAL_MODULES`` in conftest: the merge reads shard reports).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from lrpaudit.cli import main
from tests.helpers.paths import REPO as REPO_ROOT

REPO = REPO_ROOT
README = (REPO / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
TIME = re.compile(r"\d+\.\d+ s\)")


def blocks() -> list[tuple[str, str, str]]:
    """(language, body, the prose between the previous block and this one) for every fenced block."""
    found, end = [], 0
    for match in FENCE.finditer(README):
        found.append((match.group(1), match.group(2), README[end : match.start()]))
        end = match.end()
    return found


def bash_commands() -> list[tuple[str, int]]:
    commands = []
    for language, body, prose in blocks():
        if language != "bash":
            continue
        for line in body.splitlines():
            for part in line.split("&&"):
                part = part.strip()
                if not part.startswith("lrpaudit "):
                    continue
                stated = re.findall(r"exits (\d+)", prose)
                assert stated, f"README: say which code `{part}` exits with in the paragraph before its block"
                commands.append((part, int(stated[-1])))
    return commands


def sessions() -> list[tuple[str, list[str], int]]:
    """(command, the output lines shown, exit code) of every `$ lrpaudit` line in the console blocks."""
    found = []
    for language, body, _ in blocks():
        if language != "":
            continue
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("$ lrpaudit "):
                continue
            j = i + 1
            while j < len(lines) and not lines[j].startswith("$ "):
                j += 1
            assert j + 1 < len(lines) and lines[j] == "$ echo $?", (
                f"README: follow `{line}` with `$ echo $?` and the exit code"
            )
            found.append((line[2:], lines[i + 1 : j], int(lines[j + 1])))
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    (folder / "sample_models").symlink_to(REPO / "sample_models", target_is_directory=True)
    return folder


_RUNS: dict[str, object] = {}


def run(command: str, folder: Path):
    """Run an `lrpaudit ...` command line (cached: the README shows some twice)."""
    if command not in _RUNS:
        runner = CliRunner(env={"NO_COLOR": "1", "FORCE_COLOR": None, "GITHUB_ACTIONS": None})
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            _RUNS[command] = runner.invoke(main, shlex.split(command)[1:])
    return _RUNS[command]


def normal(lines) -> list[str]:
    return [TIME.sub("#.# s)", line.rstrip()) for line in lines]


def matches(shown: list[str], actual: list[str]) -> bool:
    """``shown`` equals ``actual`` where each ``...`` line stands for any number of lines."""
    pattern = "".join(".*?" if line == "..." else re.escape(line + "\n") for line in shown)
    return re.fullmatch(pattern, "".join(line + "\n" for line in actual), re.S) is not None


def test_the_readme_has_the_commands_this_test_expects():
    commands = [command for command, _ in bash_commands()] + [command for command, _, _ in sessions()]
    assert any(
        c.startswith("lrpaudit check sample_models/digits_cnn.onnx --preset epsilon-plus-flat")
        for c in commands
    )
    assert any(
        c.startswith("lrpaudit check sample_models/digits_cnn.onnx --preset conservative") for c in commands
    )
    assert "lrpaudit batch sample_models/batch.yaml" in commands
    vit = [c for c in commands if c.startswith("lrpaudit check sample_models/digits_vit.onnx")]
    assert any("--preset attnlrp" in c and "--gate explained" in c for c in vit)
    assert any("--preset" not in c for c in vit)  # the default preset on a transformer


@pytest.mark.parametrize(("command", "code"), bash_commands(), ids=lambda v: str(v)[:60])
def test_bash_block_commands_exit_as_documented(command, code, workdir):
    result = run(command, workdir)
    assert result.exit_code == code, result.output


@pytest.mark.parametrize(("command", "shown", "code"), sessions(), ids=lambda v: str(v)[:60])
def test_console_sessions_show_the_real_output(command, shown, code, workdir):
    result = run(command, workdir)
    assert result.exit_code == code, result.output
    actual = normal(result.stdout.splitlines() + result.stderr.splitlines())
    expected = normal(shown)
    assert matches(expected, actual), "README output is stale; the command now prints:\n" + "\n".join(actual)


def _table_rows(lines: list[str]) -> list[list[str]]:
    """The rows under a table's ─── rule, split on runs of 2+ spaces, up to the first line that is not a row."""
    rows, inside = [], False
    for line in lines:
        if set(line.strip()) == {"─"}:
            inside = True
            continue
        if inside:
            if not line.strip() or line.startswith(("  ", "lrpaudit:", "...")):
                break
            rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


@pytest.mark.parametrize(
    ("command", "columns"),
    [
        (
            "lrpaudit check sample_models/digits_cnn.onnx --preset epsilon-plus-flat --inputs "
            "sample_models/digits_samples.npy",
            ("layer", "op", "rule", "rel_error", "largest", "verdict"),
        ),
        (
            "lrpaudit check sample_models/digits_cnn.onnx --preset conservative --inputs "
            "sample_models/digits_samples.npy",
            ("layer", "op", "rule", "rel_error", "largest", "verdict"),
        ),
        (
            "lrpaudit batch sample_models/batch.yaml",
            ("#", "model", "config", "layers", "worst layer", "rel_error", "verdict"),
        ),
    ],
)
def test_readme_tables_match_the_current_output_row_for_row(command, columns, workdir):
    shown = {c: lines for c, lines, _ in sessions()}[command]
    readme_rows = _table_rows(shown)
    result = run(command, workdir)
    actual_rows = _table_rows(result.stdout.splitlines())
    assert readme_rows, f"README: no table under `{command}`"
    assert len(readme_rows) == len(actual_rows), actual_rows
    for readme_row, actual_row in zip(readme_rows, actual_rows):
        assert dict(zip(columns, readme_row)) == dict(zip(columns, actual_row))


def test_python_snippet_runs(workdir, monkeypatch):
    snippets = [body for language, body, _ in blocks() if language == "python"]
    assert snippets, "README: no Python example"
    monkeypatch.chdir(workdir)
    for snippet in snippets:
        assert "..." not in snippet, "README: the Python example must run as written"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(snippet, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
        printed = out.getvalue().splitlines()
        for line in snippet.splitlines():  # `print(x)   # "a" | "b"` or `# (16, 64)`: the value printed
            comment = re.search(r"^print\(.*#\s*(.+)$", line)
            if comment and not comment.group(1).startswith('"'):
                assert comment.group(1) in printed, (line, printed)
        assert printed[0] in ("pass", "fail")


def test_yaml_examples_load(tmp_path):
    from lrpaudit.config import load_config
    from lrpaudit.config.manifest import load_manifest

    yaml_blocks = [body for language, body, _ in blocks() if language == "yaml"]
    manifests = [body for body in yaml_blocks if re.search(r"^models:", body, re.M)]
    configs = [body for body in yaml_blocks if body.startswith("version: 1") and "models:" not in body]
    assert manifests == [(REPO / "sample_models" / "batch.yaml").read_text(encoding="utf-8")]
    load_manifest(REPO / "sample_models" / "batch.yaml")
    assert configs, "README: the configuration example is missing"
    for k, body in enumerate(configs):
        path = tmp_path / f"config{k}.yaml"
        path.write_text(body, encoding="utf-8")
        load_config(path)


@pytest.mark.parametrize("command", ["check", "batch"])
def test_flags_listed_in_the_readme_exist(command):
    paragraph = re.search(rf"^`{command}` flags: (.*?)(?:\n\n|\Z)", README, re.M | re.S)
    assert paragraph, f"README: no '`{command}` flags:' paragraph"
    listed = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", paragraph.group(1)))
    known = {opt for param in main.commands[command].params for opt in (*param.opts, *param.secondary_opts)}
    assert listed and listed <= known, sorted(listed - known)


def test_commands_table_names_real_commands():
    named = set(re.findall(r"^\| `lrpaudit (\w+)", README, re.M))
    assert {"check", "batch", "inspect", "rules", "presets", "init"} <= named
    assert named <= set(main.commands)
