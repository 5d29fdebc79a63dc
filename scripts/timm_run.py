"""Run timm's own scripts (train.py, validate.py, benchmark.py) on our models and on our checkpoints.

    python scripts/timm_run.py TIMM/validate.py /data/imagenet --model bn_inception --model-kwargs table=caffe
    python scripts/timm_run.py --bn-checkpoint bninception_caffe.pt TIMM/validate.py /data/imagenet \\
        --model bn_checkpoint
    python scripts/timm_run.py --bn-checkpoint runs/bn_x5/seed0/checkpoints/best.pt TIMM/train.py DATA \\
        --model bn_checkpoint --num-classes 5 --epochs 10          # fine-tune: a new 5-way classifier
    python scripts/timm_run.py TIMM/benchmark.py --model bn_inception --bench inference

timm's scripts are not in its pip package: TIMM is a checkout of https://github.com/huggingface/pytorch-image-
models, ideally at the installed version's tag (``git clone --depth 1 --branch v$(python -c "import timm;
print(timm.__version__)") https://github.com/huggingface/pytorch-image-models``). The scripts offer no option
to import a package that registers models, so this launcher imports ``bn_inception`` (registering
``bn_inception``, ``bn_inception_small``, ``bn_mlp``) and runs the script as ``__main__`` with the arguments
after it; the exit status is the script's.

``--bn-checkpoint CKPT`` also registers the timm model ``bn_checkpoint``: the network saved in one of our
checkpoints (train.py's, or scripts/convert_caffe_bninception.py's), with its weights and with the
preprocessing it records (input size, mean, std; crop as our evaluation), so ``--model bn_checkpoint`` needs
no other model flag. Its input channels and size are the checkpoint's whatever the script passes (timm's
scripts pass ``in_chans=3`` by default); a ``--num-classes`` other than the checkpoint's replaces the
classifier (fine-tuning); the scripts' other model options (``--drop``, ``--gp``, ``--bn-momentum``, ...)
apply on top of the recorded keywords.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm  # noqa: E402
from timm.models import clean_state_dict, register_model  # noqa: E402
from torch import nn  # noqa: E402

import bn_inception  # noqa: E402, F401  (registers bn_inception, bn_inception_small, bn_mlp with timm)
from bn_inception.engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402

CHECKPOINT_MODEL = "bn_checkpoint"
FIXED_BY_WEIGHTS = ("in_chans", "img_size")  # the checkpoint's, whatever a script passes


def checkpoint_model_factory(path: Path) -> Any:
    """The entry point of ``bn_checkpoint`` for the checkpoint at ``path`` (read now, once)."""
    ckpt = load_checkpoint(path)
    try:
        name, recorded, data = ckpt["model_name"], dict(ckpt["model_kwargs"]), ckpt["data"]
        mean, std = tuple(data["mean"]), tuple(data["std"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {path} has no model_name/model_kwargs/data entries; it was not written by train.py "
            "or scripts/convert_caffe_bninception.py"
        ) from e
    state = clean_state_dict(ckpt["model"])
    # The preprocessing the checkpoint records (its data entry) over any cfg its keywords carry.
    cfg = {**recorded.pop("pretrained_cfg_overlay", {}), "mean": mean, "std": std}

    def bn_checkpoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        """The network of the checkpoint given to timm_run.py --bn-checkpoint, with its weights."""
        for key in (*FIXED_BY_WEIGHTS, "pretrained_cfg", "cache_dir"):
            kwargs.pop(key, None)
        num_classes = kwargs.pop("num_classes", None)
        overlay = {**cfg, **(kwargs.pop("pretrained_cfg_overlay", None) or {})}
        model = timm.create_model(name, **{**recorded, **kwargs}, pretrained_cfg_overlay=overlay)
        model.load_state_dict(state)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)  # fine-tuning on another class list
            model.pretrained_cfg["num_classes"] = num_classes
        return model

    return bn_checkpoint


def register_checkpoint_model(path: Path) -> None:
    """Register ``bn_checkpoint`` with timm for the checkpoint at ``path`` (replacing an earlier one)."""
    factory = checkpoint_model_factory(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Overwriting bn_checkpoint")  # intended: the latest wins
        register_model(factory)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="timm_run.py [--bn-checkpoint CKPT] TIMM_SCRIPT [script arguments ...]",
    )
    p.add_argument(
        "--bn-checkpoint",
        type=Path,
        default=None,
        help=f"register our checkpoint as timm model {CHECKPOINT_MODEL}",
    )
    p.add_argument("script", type=Path, help="timm's train.py, validate.py or benchmark.py (from a checkout)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    args = p.parse_args(argv)
    if args.script.suffix != ".py" or not args.script.is_file():
        p.error(
            f"{args.script} is not a Python script; pass the path of timm's train.py, validate.py or "
            "benchmark.py in a pytorch-image-models checkout (they are not in the pip package)"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.bn_checkpoint is not None:
        try:
            register_checkpoint_model(args.bn_checkpoint)
        except CheckpointError as e:
            sys.exit(f"error: {e}")
    sys.argv = [str(args.script), *args.args]
    sys.path.insert(0, str(args.script.resolve().parent))  # as `python script.py` would
    runpy.run_path(str(args.script), run_name="__main__")


if __name__ == "__main__":
    main()
