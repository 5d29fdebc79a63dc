"""Data: ImageNet (+ subsets), Fashion-MNIST, synthetic trees; Sec. 4.2.1 transforms; loaders. Loaders yield
uint8 images (float, already on the GPU, with data.decode=gpu); every consumer makes the model's input with
``to_model_input``.
"""

from bn_inception.data.build import DataSplits, build_datasets
from bn_inception.data.datasets import InMemoryImageDataset
from bn_inception.data.decode import BadImageError, decode_image_file
from bn_inception.data.device import resolve_decode, to_model_input
from bn_inception.data.imagenet import DatasetLayoutError
from bn_inception.data.loader import build_eval_loader, build_train_loader, epoch_order
from bn_inception.data.subset import imagenet100_classes
from bn_inception.data.synthetic import make_synthetic_imagenet
from bn_inception.data.transforms import eval_sizes

__all__ = [  # noqa: RUF022 (grouped by module)
    "DataSplits", "build_datasets", "InMemoryImageDataset", "BadImageError", "decode_image_file",
    "resolve_decode", "to_model_input", "DatasetLayoutError", "imagenet100_classes",
    "build_eval_loader", "build_train_loader", "epoch_order", "make_synthetic_imagenet", "eval_sizes",
]  # fmt: skip
