"""The evaluator's table in the form of the paper's Figure 4 table, as text, Markdown, JSON and TensorBoard.

Columns as the paper's: model, resolution, crops, models, top-1 error, top-5 error (errors in percent),
each error followed by its 95% bootstrap interval.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bn_inception import files
from bn_inception.evaluation import paper
from bn_inception.evaluation.evaluator import Gain, Row

COLUMNS = ("model", "resolution", "crops", "models", "top-1 error (%)", "top-5 error (%)")


def _err(value: float, ci: tuple[float, float]) -> str:
    if any(math.isnan(v) for v in ci):
        return f"{value:.2f}"
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def table_cells(rows: Sequence[Row]) -> list[list[str]]:
    return [
        [
            r.name,
            str(r.resolution),
            str(r.crops),
            str(r.models),
            _err(r.top1_err, r.top1_err_ci),
            _err(r.top5_err, r.top5_err_ci),
        ]
        for r in rows
    ]


def caption(rows: Sequence[Row], data_name: str, bootstrap: int) -> str:
    images = rows[0].images if rows else 0
    ci = f"; [95% bootstrap interval, {bootstrap} resamples]" if bootstrap else ""
    return f"{data_name} validation, {images} images; errors in percent{ci}"


def gain_lines(gains: Sequence[Gain]) -> list[str]:
    """One sentence per ensemble: its gain over its best member, with the paired interval."""
    out = []
    for g in gains:
        top1, top5 = _gain(g.top1_gain, g.top1_gain_ci), _gain(g.top5_gain, g.top5_gain_ci)
        out.append(
            f"{g.ensemble} vs its best member ({g.best_member}): top-1 error {top1} points lower, top-5 "
            f"{top5} (paired bootstrap over the same {g.images:,} images)"
        )
    return out


def _gain(value: float, ci: tuple[float, float]) -> str:
    if any(math.isnan(v) for v in ci):
        return f"{value:+.2f}"
    return f"{value:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def paper_markdown() -> str:
    """The paper's Figure 4 table (ILSVRC-2012 validation), to read beside ours; '-' where it gives none."""
    out = [
        "The paper's Figure 4 table (ImageNet validation, 50,000 images; errors in percent):",
        "",
        f"| {' | '.join(COLUMNS)} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in paper.FIGURE4:
        cells = [
            r.model,
            *(
                "-" if v is None else str(v)
                for v in (r.resolution, r.crops, r.models, r.top1_err, r.top5_err)
            ),
        ]
        out.append(f"| {' | '.join(cells)} |")
    return "\n".join(out)


def format_text(rows: Sequence[Row], caption_text: str, gains: Sequence[Gain] = ()) -> str:
    """A fixed-width table for the console."""
    cells = table_cells(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(COLUMNS)]
    align = ["<", ">", ">", ">", ">", ">"]

    def line(values: Sequence[str]) -> str:
        return "  ".join(f"{v:{a}{w}}" for v, a, w in zip(values, align, widths, strict=True))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([caption_text, line(COLUMNS), rule, *(line(c) for c in cells), *gain_lines(gains)])


def format_markdown(
    rows: Sequence[Row], caption_text: str, command: str | None = None, gains: Sequence[Gain] = ()
) -> str:
    """A Markdown table with its caption, each ensemble's gain over its best member, the command that made
    it (when given) and the paper's Figure 4 rows below it."""
    cells = table_cells(rows)
    out = [f"| {' | '.join(COLUMNS)} |", "|---|---:|---:|---:|---:|---:|"]
    out += [f"| {' | '.join(c)} |" for c in cells]
    out += ["", caption_text + "."]
    out += [f"\n{line}." for line in gain_lines(gains)]
    if command:
        out += ["", f"Command: `{command}`"]
    if any(r.per_class for r in rows):
        out += ["", per_class_markdown(rows)]
    out += ["", paper_markdown()]
    return "\n".join(out) + "\n"


def per_class_markdown(rows: Sequence[Row]) -> str:
    """Per-class top-1 error (%), one column per row that has it."""
    with_classes = [r for r in rows if r.per_class]
    head = ["class", "images", *(f"{r.name} top-1 err" for r in with_classes)]
    out = ["Per-class top-1 error (%):", "", f"| {' | '.join(head)} |", "|---|" + "---:|" * (len(head) - 1)]
    for i, entry in enumerate(with_classes[0].per_class):
        errs = [r.per_class[i]["top1_err"] for r in with_classes]
        cells = [entry["class"], str(entry["images"]), *("-" if e is None else f"{e:.2f}" for e in errs)]
        out.append(f"| {' | '.join(cells)} |")
    return "\n".join(out)


def write_json(path: str | Path, rows: Sequence[Row], meta: dict[str, Any]) -> None:
    """``{"rows": [...], **meta}`` written atomically (a reader never sees half a file)."""
    files.write_json(path, {"rows": [_json_safe(r.to_dict()) for r in rows], **_json_safe(meta)})


def _json_safe(value: Any) -> Any:
    """NaN/Inf are not JSON: write them as null; 6 decimals (67.1, not 67.10000000000001)."""
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def tag(name: str) -> str:
    """A TensorBoard-friendly tag component (no spaces or brackets)."""
    return re.sub(r"[^\w/.-]+", "_", name).strip("_")


def write_tensorboard(log_dir: str | Path, rows: Sequence[Row], markdown: str) -> None:
    """Scalars ``eval/top1_err/<row>`` and ``eval/top5_err/<row>`` at the checkpoints' (latest) step, and
    the Markdown table as text ``eval/table``."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for r in rows:
            step = max((s for s in r.steps if s is not None), default=0)
            writer.add_scalar(f"eval/top1_err/{tag(r.name)}", r.top1_err, global_step=step)
            writer.add_scalar(f"eval/top5_err/{tag(r.name)}", r.top5_err, global_step=step)
        writer.add_text("eval/table", markdown, global_step=0)
    finally:
        writer.close()
