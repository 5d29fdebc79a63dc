"""``logger=wandb``: the run's TensorBoard writer, with every scalar it writes also sent to Weights & Biases,
and the run's HParams (tblog.run_hparams) and resolved config as the W&B run's config. TensorBoard stays
the record (reports read it); W&B is a mirror. W&B reads its own variables: ``WANDB_PROJECT`` (default
here: bn-inception), ``WANDB_ENTITY``, ``WANDB_MODE=offline`` (no network; ``wandb sync`` uploads later)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class WandbMirror:
    """Stands in for the run's ``SummaryWriter``: ``add_scalar`` goes to both, the rest to TensorBoard."""

    def __init__(self, writer: Any, run: Any) -> None:
        self._writer, self.wandb_run = writer, run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    def add_scalar(self, tag: str, value: float, global_step: int | None = None) -> None:
        self._writer.add_scalar(tag, value, global_step)
        # Several calls at one step make one W&B history row; a resumed run's steps that W&B already holds
        # (logged after the checkpoint by the stopped segment) are kept as first logged: W&B cannot rewind.
        self.wandb_run.log({tag: value}, step=global_step)

    def close(self) -> None:
        self._writer.close()
        self.wandb_run.finish()


def mirror(writer: Any, run_dir: Path, config: Mapping[str, Any], hparams: Mapping[str, Any]) -> Any:
    """``writer`` mirrored to a W&B run kept in ``<run_dir>/wandb`` (the same W&B run when the run resumes),
    named as the run directory: ``<name>[/<what differs>]/seed<k>``, grouped by ``name``."""
    try:
        import wandb
    except ImportError as e:
        raise RuntimeError("logger=wandb needs wandb: pip install 'bn-inception[tracking]'") from e
    id_file = Path(run_dir) / "wandb" / "run_id"  # one W&B run per run directory, across resumes
    if not id_file.is_file():
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(uuid.uuid4().hex[:12])
    parts, group = Path(run_dir).parts, str(config.get("name"))
    first = max((i for i, part in enumerate(parts) if part == group), default=len(parts) - 1)
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "bn-inception"),
        name="/".join(parts[first:]),
        group=group,
        id=id_file.read_text().strip(),
        resume="allow",
        dir=str(run_dir),
        config={**dict(config), "hparams": dict(hparams)},
    )
    return WandbMirror(writer, run)
