"""The README and docs cannot drift from the code: every ``python ...``, ``torchrun ...`` and ``bash ...``
command in README.md and docs/*.md (code blocks and inline code) names a script that exists; the Hydra
overrides of train.py and evaluate.py compose against the schema (every job of a ``-m`` sweep), the flags
of the other scripts are options they declare, the shell scripts parse, and an error the README shows
(``$ python ...`` then ``error: ...``) is the one line the command prints. Nothing is run: commands that
need ImageNet or a GPU are checked the same way.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from bn_inception import cli
from bn_inception.config import SCHEMAS, validate

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PROGRAMS = ("python", "torchrun", "bash")


@dataclass(frozen=True)
class Documented:
    where: str  # file:line
    words: tuple[str, ...]  # the command, shell-split, from its program on
    error: str | None = None  # the error line the document shows it printing
    elided: bool = False  # written with "..." or "$@" for arguments left out

    def __str__(self) -> str:
        return self.where


def _command(text: str, variables: dict[str, str]) -> tuple[str, ...] | None:
    """The words of a shell command from its program on (environment assignments, prompts, ``srun``, what
    follows ``;``/``&&``/``|``/``>`` and ``...`` dropped; ``$VAR`` expanded; ``<placeholder>`` -> ``X``)."""
    text = re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables.get(m[1], m[0]), text)
    text = re.sub(r"<[^<>]*>", "X", text)
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return None
    kept = []
    for word in words:
        if word in (";", "&&", "||", "|") or word.startswith((">", "2>", ";")):
            break
        if word.endswith(";"):
            kept.append(word[:-1])
            break
        kept.append(word)
    while kept and (kept[0] in ("$", "srun") or re.fullmatch(r"[A-Z_]+=.*", kept[0])):
        kept.pop(0)
    return tuple(kept) if kept and kept[0] in PROGRAMS else None


def documented_commands(path: Path) -> list[Documented]:
    text = path.read_text()
    lines = text.splitlines()
    found: list[Documented] = []
    fenced, variables, pending = False, {}, None
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced, variables = not fenced, {}
            continue
        indented = line.startswith("    ") and not line.lstrip().startswith(("-", "|", "*"))
        if not (fenced or indented):
            continue
        if pending is not None:  # a continued line
            start, joined = pending
            joined += " " + line.strip().rstrip("\\")
            pending = (start, joined) if line.rstrip().endswith("\\") else None
            if pending is None:
                _add(found, path, start, joined, variables, None)
            continue
        stripped = line.strip()
        assignment = re.fullmatch(r"([A-Z_]+)=(['\"])(.*)\2", stripped)
        if assignment:
            variables[assignment[1]] = assignment[3]
            continue
        if stripped.endswith("\\"):
            pending = (number, stripped.rstrip("\\"))
            continue
        following = lines[number].strip() if number < len(lines) else ""
        shown = stripped.startswith("$ ") and following.startswith("error: ")
        error = following.removeprefix("error: ") if shown else None
        _add(found, path, number, stripped, variables, error)
    # inline code in the prose (fenced blocks blanked out, newlines kept for the line numbers)
    prose = re.sub(r"```.*?```", lambda m: "\n" * m[0].count("\n"), text, flags=re.S)
    for match in re.finditer(r"`([^`]+)`", prose):
        _add(found, path, prose.count("\n", 0, match.start()) + 1, match[1].replace("\n", " "), {}, None)
    return found


def _add(found, path, number, text, variables, error) -> None:
    words = _command(text, variables)
    if words is not None:
        given = tuple(w for w in words if w != "..." and not w.startswith("$"))
        where = f"{path.relative_to(REPO)}:{number}"
        found.append(Documented(where, given, error, elided=len(given) < len(words)))


COMMANDS = [c for document in DOCUMENTS for c in documented_commands(document)]


def test_the_documents_hold_the_commands_we_expect():
    """The parser still finds the commands (a change of format must not silently leave nothing checked)."""
    assert len(COMMANDS) > 60
    seen = {c.words[0] for c in COMMANDS} | {w for c in COMMANDS for w in c.words if w.endswith(".py")}
    for name in ("torchrun", "bash", "train.py", "evaluate.py", "scripts/report.py",
                 "benchmarks/train_throughput.py"):  # fmt: skip
        assert name in seen, name


def _script(words: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """The script a command runs and its arguments (torchrun's own options skipped); None for a mention of
    the launcher alone (``torchrun --nproc_per_node=4`` in a sentence)."""
    rest = list(words[1:])
    if words[0] == "torchrun":
        while rest and rest[0].startswith("-"):
            rest.pop(0)
    return (rest[0], rest[1:]) if rest else (None, [])


@pytest.mark.parametrize("documented", COMMANDS, ids=str)
def test_a_documented_command_names_a_script_that_exists_and_options_it_takes(documented, capsys):
    words = documented.words
    if words[:2] in (("python", "-m"), ("python", "-c")):
        return  # a module (pytest) or a one-liner: nothing of ours
    script, args = _script(words)
    if script is None:
        return
    path = REPO / script
    assert path.is_file(), f"{documented.where}: {script} does not exist"
    if words[0] == "bash":
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    elif script in ("train.py", "evaluate.py"):
        check_hydra_command(script.removesuffix(".py"), args, documented, capsys)
    else:
        check_declared_options(path, args, documented)


def check_hydra_command(app: str, args: list[str], documented: Documented, capsys) -> None:
    """Every job of the command line composes against the schema, exactly as the pre-flight check does
    before Hydra runs; or, for an error the document shows, the command prints that line and exits 2."""
    if documented.error is not None:
        with pytest.raises(SystemExit) as stopped:
            cli.preflight(app, args)
        assert stopped.value.code == cli.EXIT_CONFIG
        assert capsys.readouterr().err.strip() == f"error: {documented.error}", documented.where
        return
    from hydra._internal.utils import get_args_parser

    parsed, unknown = get_args_parser().parse_known_args(args)
    assert not unknown, f"{documented.where}: {unknown} are not options of {app}.py"
    if parsed.help or parsed.hydra_help:
        return
    for job in cli.compose_jobs(app, parsed.overrides, parsed.multirun, cli.CONFIG_DIR):
        if documented.elided:
            continue  # what is given composes; what was left out (a required key) cannot be checked
        validate(cli.task_config(job), SCHEMAS[app])  # the pre-flight check, but making no directory
        cli.check_launcher(job)


def check_declared_options(path: Path, args: list[str], documented: Documented) -> None:
    """Each ``--option`` given is one the script declares (argparse), up to the first script it runs."""
    source = path.read_text()
    for word in args:
        if word.endswith(".py"):
            break  # e.g. scripts/timm_run.py runs timm's train.py with that script's own options
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert f'"{option}"' in source, f"{documented.where}: {path.name} has no option {option}"
