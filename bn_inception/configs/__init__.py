"""The Hydra configs of train.py and evaluate.py (a package so that Hydra finds them in an installed wheel)."""
