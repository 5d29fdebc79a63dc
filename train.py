"""``python train.py ...`` in a checkout, the same as ``bn-train ...`` where the package is installed: the
entry point is bn_inception/train.py, inside the package: a wheel carries it with its configs."""

from bn_inception.train import command

if __name__ == "__main__":
    command()
