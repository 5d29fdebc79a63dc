"""``python evaluate.py ...`` in a checkout, the same as ``bn-evaluate ...`` where the package is installed:
the entry point is bn_inception/evaluate.py, inside the package: a wheel carries it with its configs."""

from bn_inception.evaluate import command

if __name__ == "__main__":
    command()
