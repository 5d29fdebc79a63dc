"""Checkpoints: atomic saves, a consistent last/best pair, safe loads.

A checkpoint is a plain dict of tensors, containers and numbers (docs/design.md), so it loads with
``torch.load(weights_only=True)``: a file carrying a pickled code payload is refused, never executed.
``best.pt`` is a copy of the ``last.pt`` of the same step, a file of its own (damage to one is never damage
to both). After a kill the pair can be one save apart: :func:`reconcile_checkpoints` (at every start)
brings ``best.pt`` back to the best step the newest ``last.pt`` records.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import timm
import torch
from timm.models import clean_state_dict

from bn_inception.config import SAME_RUN_KEYS, InceptionModelConfig, MLPModelConfig
from bn_inception.files import write_atomically

log = logging.getLogger(__name__)

#: The networks a checkpoint may name, and the keyword arguments it may give them: the model schemas' keys and
#: what the data decide (plus a converted checkpoint's preprocessing facts), so that a checkpoint cannot make
#: ``timm.create_model`` open files (``checkpoint_path``, ``pretrained``) or take anything else.
MODELS = ("bn_inception", "bn_inception_small", "bn_mlp")
MODEL_ARGS = frozenset(
    f.name for s in (InceptionModelConfig, MLPModelConfig) for f in dataclasses.fields(s)
) - {"name"} | {"num_classes", "in_chans", "img_size", "global_pool", "pretrained_cfg_overlay"}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message is one line that says what to do."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` with the project's one atomic writer (``bn_inception/files.py``): a crash
    or a full disk leaves the previous file intact. Not timm's CheckpointSaver: it renames without fsync and
    pickles its ``args`` (an OmegaConf object there breaks ``weights_only`` loading)."""
    _write(Path(path), lambda f: torch.save(state, f))


def copy_checkpoint(source: str | Path, path: str | Path) -> None:
    """Make ``path`` (``best.pt``) an atomic copy of the checkpoint ``source``, a file of its own."""

    def copy(f: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 24)

    _write(Path(path), copy)


def _write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    try:
        write_atomically(path, write)
    except BaseException as e:
        # A full disk reaches us from torch's file writer as "RuntimeError: [enforce fail at
        # inline_container.cc:672] . unexpected pos", with the OSError as its context.
        torch_writer = any(m in str(e) for m in ("inline_container", "PytorchStreamWriter"))
        error = e.__context__ if isinstance(e, RuntimeError) and torch_writer else e
        if not isinstance(error, OSError):
            raise
        hint = "check that the directory is writable"
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            hint = "free some disk space (or raise the quota or file-size limit)"
        reason = f"{error.strerror or error}; {hint} (the previous checkpoint is intact)"
        raise CheckpointError(f"could not write checkpoint {path}: {reason}") from e


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; every failure is a one-line :class:`CheckpointError`.
    ``mmap=True`` maps the tensors instead of reading them (cheap when only the metadata is needed)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        if path.is_symlink() and not path.exists():
            what = f"is a symbolic link to {os.readlink(path)}, which does not exist"
        raise CheckpointError(f"checkpoint {path} {what}; pass the path of a .pt file written by train.py")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - any file that is not a whole checkpoint fails inside torch.load
        raise CheckpointError(_unloadable(path, e)) from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a bn-inception checkpoint (no 'model' entry)")
    return ckpt


def _unloadable(path: Path, e: Exception) -> str:
    """Why torch.load failed, in our words: torch's own advises turning ``weights_only`` off, never ours."""
    if isinstance(e, OSError):
        return f"cannot read checkpoint {path}: {e.strerror or e}"
    blocked = re.search(r"GLOBAL ([\w.]+)", str(e))
    if blocked:  # a pickle that would import code: the payload of an attack, or a foreign object
        return (
            f"checkpoint {path} was refused: loading it would call {blocked[1]}, which no checkpoint written "
            f"by train.py does (nothing was run); only load files you trust"
        )
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80\x02\x8a\n")):  # torch.save's zip, or its legacy pickle
        what = "an empty file" if not head else "not a file written by torch.save"
        return f"{path} is not a checkpoint ({what}); pass a .pt file written by train.py"
    return (
        f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); use another checkpoint, "
        f"e.g. checkpoints/best.pt instead of last.pt"
    )


def reconcile_checkpoints(ckpt_dir: Path, last: dict[str, Any]) -> list[str]:
    """Make ``best.pt`` the checkpoint of the best step recorded in ``last`` (``last.pt``'s content);
    returns what was repaired, or what cannot be, as log lines.

    A kill between writing ``last.pt`` and copying ``best.pt`` leaves ``best.pt`` one improvement behind,
    with the new best being ``last.pt`` itself: it is copied again. Any other disagreement cannot be
    repaired (the best weights are gone) and is reported, never hidden.
    """
    best_path, best_step = ckpt_dir / "best.pt", last.get("best_step")
    try:  # the step best.pt was written at (tensors mapped, not read), or None: missing or unreadable
        have = int(load_checkpoint(best_path, mmap=True)["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        have = None
    if best_step is None or have == best_step:
        return []
    if best_step == last.get("step"):
        copy_checkpoint(ckpt_dir / "last.pt", best_path)
        return [f"repaired {best_path}: it held step {have}, the run's best is step {best_step} (last.pt)"]
    return [
        f"{best_path} holds step {have} but the run's best is step {best_step}, whose weights are not on "
        f"disk any more; best.pt is left as it is"
    ]


def identity_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config flattened to ``section.key`` without ``config.SAME_RUN_KEYS``: what must match to resume."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(identity_config(value, f"{prefix}{key}."))
        elif f"{prefix}{key}" not in SAME_RUN_KEYS:
            out[f"{prefix}{key}"] = value
    return out


def config_digest(config: Mapping[str, Any]) -> str:
    """A stable digest of what the run computes (its identity config), for results.json and resume checks."""
    text = json.dumps(identity_config(config), sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every identity key that differs between two resolved configs."""
    a, b = identity_config(old), identity_config(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when every floating-point value is finite (parameters and buffers: BN statistics too)."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> torch.nn.Module:
    """The network saved in ``ckpt`` (its ``model_name``/``model_kwargs``) with its weights (DDP or
    torch.compile prefixes removed); refused unless its arguments are the model's and its weights finite."""
    try:
        name, kwargs = ckpt["model_name"], dict(ckpt["model_kwargs"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} has no valid model_name/model_kwargs; it was not written by train.py "
            f"(or scripts/convert_caffe_bninception.py)"
        ) from e
    if name not in MODELS:
        raise CheckpointError(f"checkpoint {path} names model {name!r}; only {', '.join(MODELS)} are known")
    if unknown := sorted(set(kwargs) - MODEL_ARGS):
        raise CheckpointError(
            f"checkpoint {path} passes {unknown[0]!r} to {name}, which is not one of its arguments; refused"
        )
    import bn_inception  # noqa: F401  (registers the models with timm)

    state = clean_state_dict(ckpt["model"])
    if not all_finite(state.values()):
        raise CheckpointError(
            f"checkpoint {path} holds NaN or infinite weights or BN statistics (a diverged run?); refused"
        )
    try:
        model = timm.create_model(name, **kwargs)
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not match model {name}{kwargs}: {first}") from e
    return model


def capture_rng_state() -> dict[str, Any]:
    """Every random generator's state as plain tensors and containers (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
