"""The Hydra configs of train.py and evaluate.py (a package: Hydra finds them in an installed wheel)."""
