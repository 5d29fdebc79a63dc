"""Checkpoints: atomic saves and safe loads.

A checkpoint is a plain dict of tensors, containers and numbers (see docs/design.md), so it loads with
``torch.load(weights_only=True)``: a file carrying a pickled code payload is refused, never executed.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import clean_state_dict
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message is one line that says what to do."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: temp file in the same directory, fsync, rename, fsync dir.

    Hand-written because timm's CheckpointSaver renames without fsync and pickles its ``args`` (an
    OmegaConf object there breaks ``weights_only`` loading). A crash or a full disk at any point leaves
    the previous file at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        hint = "free some disk space" if e.errno == errno.ENOSPC else "check the directory is writable"
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}; {hint}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; every failure is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass the path of a .pt file written by train.py"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain containers "
            f"({first}); only load files you trust, and only checkpoints written by train.py"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); use another checkpoint, "
            f"e.g. checkpoints/best.pt instead of last.pt"
        ) from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a bn-inception checkpoint (no 'model' entry)")
    return ckpt


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without DDP (``module.``) or torch.compile (``_orig_mod.``) prefixes."""
    return clean_state_dict(model.state_dict())


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> nn.Module:
    """Rebuild the network saved in ``ckpt`` (from its ``model_name``/``model_kwargs``) and load its weights.

    Accepts state dicts saved under DDP or torch.compile (prefixed keys).
    """
    try:
        name, kwargs = ckpt["model_name"], dict(ckpt["model_kwargs"])
    except KeyError as e:
        raise CheckpointError(
            f"checkpoint {path} has no {e.args[0]!r}; it was not written by train.py"
        ) from e
    import bn_inception  # noqa: F401  (registers the models with timm)

    model = timm.create_model(name, **kwargs)
    try:
        model.load_state_dict(clean_state_dict(ckpt["model"]))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not match model {name}{kwargs}: {first}") from e
    return model
