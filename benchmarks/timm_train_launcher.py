"""Run timm's own ``train.py`` with this project's models registered (``--model bn_inception``).

    python benchmarks/timm_train_launcher.py PATH/pytorch-image-models/train.py --model bn_inception ...

timm's ``train.py`` is not in the pip package: clone https://github.com/huggingface/pytorch-image-models at
the tag of the installed timm (``git clone --depth 1 --branch v$(python -c "import timm;
print(timm.__version__)") https://github.com/huggingface/pytorch-image-models``). This launcher imports
``bn_inception`` (whose import registers the models with timm), then runs that script as ``__main__`` with
the remaining arguments, and prints the process's peak GPU memory when it exits (``PEAK_GPU_MEMORY_BYTES
<n>``) for ``benchmarks/train_throughput.py``.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import bn_inception  # noqa: E402, F401  (registers bn_inception, bn_inception_small, bn_mlp with timm)


def _report_peak_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        print(f"PEAK_GPU_MEMORY_BYTES {torch.cuda.max_memory_allocated()}", flush=True)


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].endswith(".py") or not Path(sys.argv[1]).is_file():
        sys.exit("usage: timm_train_launcher.py PATH/TO/pytorch-image-models/train.py [train.py arguments]")
    script = sys.argv[1]
    sys.argv = [script, *sys.argv[2:]]
    atexit.register(_report_peak_memory)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
