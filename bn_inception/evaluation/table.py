"""The evaluator's table as the paper's Figure 4 (errors with 95% bootstrap intervals), ensemble gains, and
their outputs (console, Markdown, JSON, TensorBoard). An output path that is a checkpoint, an unwritable
path, or an existing file without evaluate.py's mark is refused before any work; evaluate.py's own files are
replaced atomically."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bn_inception.cli import unwritable
from bn_inception.evaluation.checkpoints import EvaluationError
from bn_inception.evaluation.ensemble import TOPK, bootstrap_mean_ci, error_percent, per_class_error
from bn_inception.files import write_atomically

log = logging.getLogger(__name__)

COLUMNS = ("model", "resolution", "crops", "models", "top-1 error (%)", "top-5 error (%)")
MARK = "bn-inception evaluate.py"  # the JSON key and Markdown last line that say evaluate.py wrote a file
MARKDOWN_MARK = f"<!-- written by {MARK} -->"

# The paper's Figure 4 table (Sec. 4.2.3), ILSVRC-2012 validation, errors in percent; None: "-" in the paper.
# (model, resolution, crops, models, top-1 error, top-5 error)
FIGURE4: tuple[tuple[str, int | str, int | None, int | None, float | None, float], ...] = (
    ("GoogLeNet ensemble", 224, 144, 7, None, 6.67),
    ("Deep Image low-res", 256, None, 1, None, 7.96),
    ("Deep Image high-res", 512, None, 1, 24.88, 7.42),
    ("Deep Image ensemble", "variable", None, None, None, 5.98),
    ("BN-Inception single crop", 224, 1, 1, 25.2, 7.82),
    ("BN-Inception multicrop", 224, 144, 1, 21.99, 5.82),
    ("BN-Inception ensemble", 224, 144, 6, 20.1, 4.9),
)


@dataclass
class Row:
    name: str
    models: int
    crops: int
    resolution: int | str  # input pixels, or "mixed" for an ensemble of different input sizes
    top1_err: float  # percent
    top5_err: float
    top1_err_ci: tuple[float, float]  # 95% percentile-bootstrap interval, percent
    top5_err_ci: tuple[float, float]
    images: int
    bn_stats: str
    checkpoints: list[str]
    steps: list[int | None]
    per_class: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None or k != "per_class"}


@dataclass(frozen=True)
class Gain:
    """An ensemble's gain over its best member: error points (> 0: the ensemble is better), paired 95% CIs."""

    ensemble: str
    best_member: str  # the member with the lowest top-1 error (point estimate; first of ties)
    top1_gain: float  # percentage points
    top5_gain: float
    top1_gain_ci: tuple[float, float]
    top5_gain_ci: tuple[float, float]
    images: int


def build_rows(
    members: Sequence[Any],
    ensembles: dict[str, Sequence[int]],
    predictions: Any,
    crops: int,
    classes: Sequence[str],
    bootstrap: int = 1000,
    seed: int = 0,
    per_class: bool = False,
) -> list[Row]:
    # Each ensemble's row follows its last member's: members, ensemble, [pop] members, ensemble [pop].
    order = [(i, 0, m.name, [i]) for i, m in enumerate(members)]
    order += [(max(idx), 1, key, list(idx)) for key, idx in ensembles.items()]
    groups = [(key, [members[i] for i in idx]) for _, _, key, idx in sorted(order, key=lambda o: o[:2])]
    stacked = np.concatenate([predictions.correct[k] for k, _ in groups], axis=1)  # paired resampling
    errors = error_percent(stacked).reshape(len(groups), len(TOPK))
    nan = np.full((len(groups), len(TOPK), 2), np.nan)
    cis = bootstrap_mean_ci(1.0 - stacked, bootstrap, seed).reshape(nan.shape) if bootstrap else nan
    rows = []
    for r, (key, group) in enumerate(groups):
        sizes = {m.input_size for m in group}
        table = None
        if per_class:
            err, counts = per_class_error(predictions.correct[key], predictions.labels, len(classes))
            table = [  # NaN (a class without images) is null in the JSON, "-" in Markdown
                {"class": str(c), "images": int(n), "top1_err": float(e[0]), "top5_err": float(e[1])}
                for c, n, e in zip(classes, counts, err, strict=True)
            ]
        rows.append(
            Row(
                name=key,
                models=len(group),
                crops=crops,
                resolution=sizes.pop() if len(sizes) == 1 else "mixed",
                top1_err=float(errors[r, 0]),
                top5_err=float(errors[r, 1]),
                top1_err_ci=tuple(map(float, cis[r, 0])),
                top5_err_ci=tuple(map(float, cis[r, 1])),
                images=predictions.images,
                bn_stats=group[0].bn_stats,
                checkpoints=[str(m.path) for m in group],
                steps=[m.step for m in group],
                per_class=table,
            )
        )
    return rows


def ensemble_gains(
    members: Sequence[Any],
    ensembles: dict[str, Sequence[int]],
    predictions: Any,
    bootstrap: int = 1000,
    seed: int = 0,
) -> list[Gain]:
    """Each ensemble's gain over its best member; paired resamples (the same images for both) give the
    per-image difference's spread, far narrower than the two errors' intervals (they share hard images)."""
    gains = []
    for key, idx in ensembles.items():
        errs = {members[i].name: 1.0 - predictions.correct[members[i].name] for i in idx}
        best = min(errs, key=lambda name: errs[name][:, 0].mean())
        diff = errs[best] - (1.0 - predictions.correct[key])  # [N, 2]: per image, member wrong - ens wrong
        gain = 100.0 * diff.mean(axis=0)
        ci = bootstrap_mean_ci(diff, bootstrap, seed) if bootstrap else np.full((2, 2), np.nan)
        ci0, ci1 = tuple(map(float, ci[0])), tuple(map(float, ci[1]))
        gains.append(Gain(key, best, float(gain[0]), float(gain[1]), ci0, ci1, predictions.images))
    return gains


def per_image(predictions: Any) -> dict[str, Any]:
    hits = {
        f"top{k}": {key: "".join(map(str, c[:, i].astype(int))) for key, c in predictions.correct.items()}
        for i, k in enumerate(TOPK)
    }
    return {"labels": predictions.labels.tolist(), **hits}


# ---- rendering -----------------------------------------------------------------------------------------


def _err(value: float, ci: Sequence[float], sign: str = "") -> str:
    if any(math.isnan(v) for v in ci):
        return f"{value:{sign}.2f}"
    return f"{value:{sign}.2f} [{ci[0]:{sign}.2f}, {ci[1]:{sign}.2f}]"


def table_cells(rows: Sequence[Row]) -> list[list[str]]:
    return [
        [r.name, str(r.resolution), str(r.crops), str(r.models), _err(r.top1_err, r.top1_err_ci),
         _err(r.top5_err, r.top5_err_ci)]
        for r in rows
    ]  # fmt: skip


def gain_lines(gains: Sequence[Gain]) -> list[str]:
    return [
        f"{g.ensemble} vs its best member ({g.best_member}): top-1 error "
        f"{_err(g.top1_gain, g.top1_gain_ci, '+')} points lower, top-5 "
        f"{_err(g.top5_gain, g.top5_gain_ci, '+')} (paired bootstrap over the same {g.images:,} images)"
        for g in gains
    ]


def _markdown_table(head: Sequence[str], cells: Sequence[Sequence[str]]) -> list[str]:
    out = [f"| {' | '.join(head)} |", "|---|" + "---:|" * (len(head) - 1)]
    return out + [f"| {' | '.join(c)} |" for c in cells]


def format_text(rows: Sequence[Row], caption_text: str, gains: Sequence[Gain] = ()) -> str:
    cells = table_cells(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(COLUMNS)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            f"{v:{'<' if i == 0 else '>'}{w}}" for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([caption_text, line(COLUMNS), rule, *(line(c) for c in cells), *gain_lines(gains)])


def format_markdown(
    rows: Sequence[Row], caption_text: str, command: str | None = None, gains: Sequence[Gain] = ()
) -> str:
    """The table, caption, gains, command, per-class errors (when computed) and the paper's Figure 4 rows."""
    out = _markdown_table(COLUMNS, table_cells(rows)) + ["", caption_text + "."]
    out += [f"\n{line}." for line in gain_lines(gains)]
    if command:
        out += ["", f"Command: `{command}`"]
    with_classes = [r for r in rows if r.per_class]
    if with_classes:
        head = ["class", "images", *(f"{r.name} top-1 err" for r in with_classes)]
        cells = [
            [entry["class"], str(entry["images"])]
            + ["-" if math.isnan(e := r.per_class[i]["top1_err"]) else f"{e:.2f}" for r in with_classes]
            for i, entry in enumerate(with_classes[0].per_class)
        ]
        out += ["", "Per-class top-1 error (%):", "", *_markdown_table(head, cells)]
    paper = [[str(v) if v is not None else "-" for v in row] for row in FIGURE4]
    out += ["", "The paper's Figure 4 table (ImageNet validation, 50,000 images; errors in percent):", ""]
    return "\n".join(out + _markdown_table(COLUMNS, paper)) + "\n"


def _json_safe(value: Any) -> Any:
    """NaN/Inf are not JSON: write them as null; 6 decimals (67.1, not 67.10000000000001)."""
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_report(report: Any, options: Any, command: str) -> None:
    """The table on stdout; where ``options`` (EvalConfig) asks, JSON (with ``command`` and our mark),
    Markdown and TensorBoard scalars ``eval/top{1,5}_err/<row>`` at the latest checkpoint step."""
    rows, data = report.rows, report.meta["data"]
    title = f"{data['name']} validation, {rows[0].images if rows else 0} images; errors in percent"
    title += f"; [95% bootstrap interval, {options.bootstrap} resamples]" if options.bootstrap else ""
    title += f"; {data['skipped_images']} unreadable images skipped" if data["skipped_images"] else ""
    print(format_text(rows, title, report.gains), flush=True)
    markdown = format_markdown(rows, title, command=command, gains=report.gains)
    json_path, md_path = _outputs(options)
    if json_path:
        table = {"rows": [r.to_dict() for r in rows], **report.meta, "command": command, "written_by": MARK}
        _write(json_path, json.dumps(_json_safe(table), indent=2) + "\n")
    if md_path:
        _write(md_path, f"{markdown}\n{MARKDOWN_MARK}\n")
    if options.tb_dir:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(options.tb_dir)) as writer:
            for r in rows:
                step = max((s for s in r.steps if s is not None), default=0)
                tag = re.sub(r"[^\w/.-]+", "_", r.name).strip("_")
                writer.add_scalar(f"eval/top1_err/{tag}", r.top1_err, global_step=step)
                writer.add_scalar(f"eval/top5_err/{tag}", r.top5_err, global_step=step)
            writer.add_text("eval/table", markdown, global_step=0)
        log.info("wrote TensorBoard events to %s", options.tb_dir)


# ---- where evaluate.py may write -----------------------------------------------------------------------


def _outputs(options: Any) -> tuple[Path | None, Path | None]:
    """The JSON and Markdown paths: ``markdown``, else ``output`` with ``.md`` for its suffix."""
    out, md = (Path(p) if p else None for p in (options.output, options.markdown))
    if out and not md:
        md = out.with_suffix(".md") if out.suffix != ".md" else out.with_name(out.name + ".md")
    return out, md


def check_outputs(options: Any, inputs: Sequence[Path]) -> None:
    """Refuse, before any work, an output that is a checkpoint, a folder, not ours or not writable."""
    if options.tb_dir and (problem := unwritable(Path(options.tb_dir))):
        raise EvaluationError(f"tb_dir={options.tb_dir}: {problem}; choose another folder")
    protected = {p.resolve() for p in inputs}
    for path in (p for p in _outputs(options) if p):
        key = f"{path} (output)"
        if path.suffix == ".pt" or path.resolve() in protected:
            raise EvaluationError(f"{key} is a checkpoint; write the table to a .json or .md path instead")
        if path.is_dir():
            raise EvaluationError(f"{key} is a directory; give a file path such as {path / 'eval.json'}")
        if path.exists() and not _written_by_us(path):
            raise EvaluationError(
                f"{key} exists and was not written by evaluate.py; choose a new path (nothing was changed)"
            )
        if problem := unwritable(path.parent):
            raise EvaluationError(f"{key}: {problem}; choose another path")


def _written_by_us(path: Path) -> bool:
    try:
        text = path.read_text()
        return text.rstrip().endswith(MARKDOWN_MARK) or json.loads(text).get("written_by") == MARK
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text)
    except OSError as e:
        raise EvaluationError(f"could not write {path}: {e.strerror or e}") from e
    log.info("wrote %s", path)
