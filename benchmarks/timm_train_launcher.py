"""Run timm's own ``train.py`` with this project's models registered (``--model bn_inception``), and report
the process's peak GPU memory, for ``benchmarks/train_throughput.py``.

    python benchmarks/timm_train_launcher.py PATH/pytorch-image-models/train.py --model bn_inception ...

The launching is ``scripts/timm_run.py``'s (which documents where to get timm's scripts); this adds one line
when the process exits: ``PEAK_GPU_MEMORY_BYTES <n>``.
"""

from __future__ import annotations

import atexit
import importlib.util
import sys
from pathlib import Path

import torch

TIMM_RUN = Path(__file__).resolve().parents[1] / "scripts" / "timm_run.py"


def _report_peak_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        print(f"PEAK_GPU_MEMORY_BYTES {torch.cuda.max_memory_allocated()}", flush=True)


def main() -> None:
    spec = importlib.util.spec_from_file_location("timm_run", TIMM_RUN)
    timm_run = sys.modules["timm_run"] = importlib.util.module_from_spec(spec)  # where timm finds models
    spec.loader.exec_module(timm_run)
    atexit.register(_report_peak_memory)
    timm_run.main(sys.argv[1:])


if __name__ == "__main__":
    main()
