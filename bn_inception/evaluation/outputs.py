"""Where evaluate.py writes: checked before the evaluation starts, never over a file it did not write.

An ``output=``/``markdown=`` path that is a checkpoint (``*.pt``), one of the evaluated files, or any
existing file without evaluate.py's mark is refused in one line; so is a path that cannot be written
(its folder is a file, or is not writable). A file evaluate.py wrote before is replaced (atomically).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bn_inception.cli import unwritable
from bn_inception.evaluation.evaluator import EvaluationError
from bn_inception.files import write_atomically

#: The JSON key and Markdown last line that say evaluate.py wrote a file (so it may replace it).
MARK = "bn-inception evaluate.py"
MARKDOWN_MARK = f"<!-- written by {MARK} -->"


def markdown_path(output: str) -> Path:
    """``eval/table.json`` -> ``eval/table.md`` (never the JSON's own path)."""
    path = Path(output)
    return path.with_suffix(".md") if path.suffix != ".md" else path.with_name(path.name + ".md")


def check_outputs(paths: Sequence[str | None], inputs: Sequence[Path], tb_dir: str | None = None) -> None:
    """Refuse, before any work, an output path that would overwrite what evaluate.py did not write, or a
    TensorBoard folder where files cannot be made."""
    problem = unwritable(Path(tb_dir)) if tb_dir else None
    if problem:
        raise EvaluationError(f"tb_dir={tb_dir}: {problem}; choose another folder")
    protected = {p.resolve() for p in inputs}
    for given in paths:
        if not given:
            continue
        path = Path(given)
        key = f"{path} (output)"
        if path.suffix == ".pt" or path.resolve() in protected:
            raise EvaluationError(f"{key} is a checkpoint; write the table to a .json or .md path instead")
        if path.is_dir():
            raise EvaluationError(f"{key} is a directory; give a file path such as {path / 'eval.json'}")
        if path.exists() and not _written_by_us(path):
            raise EvaluationError(
                f"{key} exists and was not written by evaluate.py; choose a new path (nothing was changed)"
            )
        problem = unwritable(path.parent)
        if problem:
            raise EvaluationError(f"{key}: {problem}; choose another path")


def _written_by_us(path: Path) -> bool:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    if text.rstrip().endswith(MARKDOWN_MARK):
        return True
    try:
        return json.loads(text).get("written_by") == MARK
    except (ValueError, AttributeError):
        return False


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and a rename; one line on failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text)
    except OSError as e:
        raise EvaluationError(f"could not write {path}: {e.strerror or e}") from e
