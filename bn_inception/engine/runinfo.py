"""What a run records about itself: results.json, the config digest, code revision, versions, hardware."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision

from bn_inception.files import write_atomically

#: Keys that change how long or how verbosely a run goes, not what it computes: a run resumed with
#: other values of these is still the same run (e.g. continuing to a larger trainer.max_steps).
RUN_LENGTH_KEYS = frozenset(
    {
        "resume",
        "trainer.max_steps",
        "trainer.eval_limit",
        "trainer.log_every",
        "trainer.progress",
        "trainer.eval_every",
        "data.root",
        "data.workers",
        "trainer.eval_batch_size",
        "trainer.device",
        "trainer.compile",
        "trainer.finite_check",
        "data.decode",
        "data.index",
        "logger",
    }
)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, whole or not at all (readers never see half a file)."""
    write_atomically(path, json.dumps(obj, indent=2) + "\n")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def identity_config(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config without :data:`RUN_LENGTH_KEYS`: what must match for a run to be resumed."""
    return {k: v for k, v in flatten(config).items() if k not in RUN_LENGTH_KEYS}


def config_digest(config: dict[str, Any]) -> str:
    """A stable digest of what the run computes (its identity config), for results.json and resume checks."""
    text = json.dumps(identity_config(config), sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every identity key that differs between two resolved configs."""
    a, b = identity_config(old), identity_config(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def _git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if rev.returncode != 0:
            return None
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, world_size: int) -> dict[str, Any]:
    """Code revision, package versions and hardware, so a result says what produced it."""
    info: dict[str, Any] = {
        "git": _git_revision(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a TorchVersion object otherwise: not loadable weights_only
        "torchvision": str(torchvision.__version__),
        "timm": str(timm.__version__),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "world_size": world_size,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
