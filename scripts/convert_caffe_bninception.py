"""Convert the published BN-Inception weights (the Caffe model's PyTorch port) into one of our checkpoints.

    python scripts/convert_caffe_bninception.py bn_inception-52deb4733.pth bninception_caffe.pt
    python evaluate.py checkpoints=bninception_caffe.pt data=imagenet data.root=/data/imagenet

The input is the state dict of ``bninception`` from Cadene's pretrained-models package, a file you download
yourself (its URL is in that package's ``pretrainedmodels/models/bninception.py``); nothing is downloaded
here. The output is our ``bn_inception`` with ``table="caffe", stem="plain", pool="caffe"``, taking our
usual input (RGB in [0, 1], normalised with the mean/std the checkpoint stores) and evaluated with the
port's transform (resize 256, centre crop 224). How the two layouts correspond:
``bn_inception/models/caffe_port.py``. A file that is not the port's state dict gets one line naming the
first offending key; the output is written atomically, so a failed run leaves no file behind.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from bn_inception.engine.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from bn_inception.models.caffe_port import ConversionError, port_checkpoint  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("port", type=Path, help="the port's state dict (.pth), e.g. bn_inception-52deb4733.pth")
    p.add_argument("output", type=Path, help="our checkpoint to write (.pt)")
    return p.parse_args(argv)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_port_state(path: Path) -> object:
    """The file's content, loaded with ``weights_only=True`` (tensors and containers only, no code)."""
    if not path.is_file():
        raise ConversionError(f"{path} does not exist; pass the port's .pth file (downloaded yourself)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"{path} could not be read as a weights-only torch file ({first})") from e


def convert(port: Path, output: Path) -> dict:
    """Check and convert ``port`` and write ``output`` atomically; returns the checkpoint."""
    if output.resolve() == port.resolve():
        raise ConversionError(f"the output {output} is the input file; choose another output path")
    ckpt = port_checkpoint(load_port_state(port), source={"file": port.name, "sha256": _sha256(port)})
    save_checkpoint(ckpt, output)
    return ckpt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ckpt = convert(args.port, args.output)
    except (ConversionError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    kwargs = ", ".join(f"{k}={v!r}" for k, v in ckpt["model_kwargs"].items() if k != "pretrained_cfg_overlay")
    print(f"wrote {args.output}: {ckpt['model_name']}({kwargs}), {len(ckpt['data']['classes'])} classes")
    print(
        f"evaluate it: python evaluate.py checkpoints={args.output} data=imagenet data.root=<ImageNet folder>"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
