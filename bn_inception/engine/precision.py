"""Where and how a network runs: device, autocast precision, memory layout, compilation, the finite check,
and the record of it (:func:`environment`). Shared by training and evaluation: ``auto`` means the same in
both. The values are the schema's, checked before anything runs."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

NVIDIA_PROC = Path("/proc/driver/nvidia")  # the kernel driver's view: gpus/<bus id>/ per GPU, version
_MIN_DRIVER = {"13": 580, "12": 525}  # the NVIDIA driver each CUDA major version needs (CUDA's release notes)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when a GPU is visible, else cpu; a named device must exist. A machine whose NVIDIA
    driver lists a GPU that torch cannot use is refused, not trained on its CPU without a word."""
    if device not in ("auto", "cpu", "cuda"):  # a library caller's value (EvalConfig built in Python)
        raise ValueError(f"device={device!r} is not valid; use auto, cpu or cuda")
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if unusable := unusable_gpu():
        raise ValueError(f"device={device}: {unusable}; or set device=cpu to run on the CPU")
    if device == "cuda":
        raise ValueError("device=cuda but no GPU is visible; use device=cpu or auto")
    return torch.device("cpu")


def unusable_gpu() -> str | None:
    """Why torch sees no GPU where the NVIDIA kernel driver lists one (None: there is none, or the GPUs are
    hidden on purpose with CUDA_VISIBLE_DEVICES). The usual cause: a driver older than this torch's CUDA
    build needs (the PyPI torch 2.14 wheel is CUDA 13.0: driver >= 580); then ``torch.cuda.is_available()``
    is False while ``nvidia-smi`` works."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
    if torch.version.cuda is None or hidden or not any((NVIDIA_PROC / "gpus").glob("*")):
        return None
    try:
        driver = re.search(r"\d+\.\d+(\.\d+)?", (NVIDIA_PROC / "version").read_text()).group()
    except (OSError, AttributeError):
        driver = "version unknown"
    need = _MIN_DRIVER.get(torch.version.cuda.split(".")[0])
    needs = f", which needs driver >= {need}" if need else ""
    return (
        f"this machine has an NVIDIA GPU (driver {driver}) that torch {torch.__version__} cannot use (a CUDA "
        f"{torch.version.cuda} build{needs}); update the NVIDIA driver, or install a torch built for the "
        f"driver's CUDA version"
    )


def check_deterministic(deterministic: bool, lrn: bool, device: torch.device) -> None:
    """``trainer.deterministic=true`` makes torch raise at the first op without a deterministic kernel; on a
    GPU LRN's backward is one (``nn.LocalResponseNorm`` pools over channels with a 3-D average pool, and
    ``avg_pool3d_backward_cuda`` is non-deterministic). Refused before anything is built."""
    if deterministic and lrn and device.type == "cuda":
        raise ValueError(
            "trainer.deterministic=true cannot train model.lrn=true on a GPU: LRN's backward (a 3-D average "
            "pool) has no deterministic CUDA kernel; set trainer.deterministic=false or model.lrn=false"
        )


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """``auto`` -> bf16 autocast on a GPU, none on a CPU (bf16 convolutions there are slower than fp32)."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs a GPU; use amp=bf16 or none on a CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def resolve_channels_last(value: Any, device: torch.device) -> bool:
    """``auto`` -> on, on every device: channels-last measured faster on CPU as on GPU (64 vs 87 ms per
    step of bn_inception_small on 1 thread, 541 vs 692 ms for bn_inception at batch 8; docs/benchmarks.md)."""
    return str(value).lower() != "false"  # the schema's auto | true | false, or a YAML/Python bool


def resolve_compile(value: Any, device: torch.device) -> str | None:
    """``trainer.compile`` -> a torch.compile mode, or None for eager. auto: ``default`` on a GPU."""
    text = str(value).lower()
    if text == "auto":
        return "default" if device.type == "cuda" else None
    return {"true": "default", "false": None}.get(text, text)


def resolve_finite_check(value: str, device: torch.device) -> str:
    """``trainer.finite_check`` -> sync | device. auto: device on a GPU (no per-step sync), sync elsewhere."""
    if value == "auto":
        return "device" if device.type == "cuda" else "sync"
    return value


def autocast_context(device: torch.device, amp_dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``amp_dtype`` on ``device``, or nothing when it is None."""
    return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def environment(device: torch.device, world_size: int) -> dict[str, Any]:
    """Code revision, package versions and hardware, so a result says what produced it."""
    import timm
    import torchvision

    git = ["git", "-C", str(Path(__file__).resolve().parents[2]), "describe", "--always", "--exclude=*"]
    try:  # the commit, +dirty when tracked files differ from it
        rev = subprocess.run([*git, "--dirty=+dirty"], capture_output=True, text=True, timeout=5)
        revision = rev.stdout.strip() if rev.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        revision = None
    info: dict[str, Any] = {
        "git": revision,
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
