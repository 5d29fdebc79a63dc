"""scripts/timm_run.py: timm's scripts run with our models registered, and on our checkpoints.

timm's train.py/validate.py/benchmark.py are not in its pip package; the tests marked ``timm_scripts`` run
them on a tiny generated ImageFolder when ``TIMM_SCRIPTS`` names a pytorch-image-models checkout:
``TIMM_SCRIPTS=/path/to/pytorch-image-models python -m pytest -q tests/scripts/test_timm_run.py``.
The others check the launcher's contract with a stand-in script.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.data import resolve_data_config

import bn_inception  # noqa: F401
from bn_inception.data.synthetic import make_synthetic_imagenet
from bn_inception.engine.checkpoint import save_checkpoint

TIMM_SCRIPTS = os.environ.get("TIMM_SCRIPTS")
KWARGS = dict(width_mult=0.125, norm="batch", num_classes=3, in_chans=1, img_size=32)  # as train.py records
STAND_IN = """
import json, sys, timm
model = timm.create_model(sys.argv[1], width_mult=0.125)
print(json.dumps({"argv": sys.argv, "name": __name__, "classes": model.num_classes}))
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def timm_run(repo):  # noqa: ANN001, ANN201
    spec = importlib.util.spec_from_file_location("timm_run", repo / "scripts" / "timm_run.py")
    module = sys.modules["timm_run"] = importlib.util.module_from_spec(spec)  # where timm looks models up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """One of our checkpoints (docs/design.md format) of a tiny greyscale 3-class network."""
    torch.manual_seed(0)
    model = timm.create_model("bn_inception_small", **KWARGS)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(), m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    data = dict(input_size=32, mean=[0.5], std=[0.25], classes=["a", "b", "c"], in_chans=1)
    save_checkpoint(
        dict(model=model.state_dict(), model_name="bn_inception_small", model_kwargs=KWARGS, data=data), path
    )
    return path


def test_runs_a_script_as_main_with_our_models_registered(repo, python, cli_env, tmp_path) -> None:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    run = subprocess.run(
        [python, str(repo / "scripts" / "timm_run.py"), str(script), "bn_inception_small", "3"],
        capture_output=True, text=True, env=cli_env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 3, run.stderr  # the script's exit status
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen == {"argv": [str(script), "bn_inception_small", "3"], "name": "__main__", "classes": 10}


def test_a_path_that_is_not_a_script_is_refused(timm_run, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        timm_run.main([str(tmp_path / "train.py")])
    assert info.value.code == 2 and "pytorch-image-models checkout" in capsys.readouterr().err


def _as_the_scripts_create_it(**kwargs) -> torch.nn.Module:
    """What validate.py passes to create_model (in_chans 3 unless told, num_classes None unless told)."""
    return timm.create_model("bn_checkpoint", pretrained=False, in_chans=3, global_pool=None, **kwargs)


def test_bn_checkpoint_is_the_checkpoints_network_weights_and_preprocessing(timm_run, checkpoint) -> None:
    timm_run.register_checkpoint_model(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["model"]
    model = _as_the_scripts_create_it(num_classes=None)
    assert model.in_chans == 1 and model.num_classes == 3
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)
    data = resolve_data_config(model=model)
    assert data["input_size"] == (1, 32, 32) and data["mean"] == (0.5,) and data["std"] == (0.25,)
    assert round(32 / data["crop_pct"]) == 37  # our evaluation at 32 px: shorter side 37, centre 32
    tuned = _as_the_scripts_create_it(num_classes=5, drop_rate=0.3)  # fine-tuning: a new classifier
    assert tuned.fc.out_features == 5 and tuned.head_drop.p == 0.3
    torch.testing.assert_close(tuned.features.conv1.conv.weight, saved["features.conv1.conv.weight"])


def test_runs_the_script_on_a_checkpoint_and_refuses_a_bad_one(
    timm_run, checkpoint, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN.replace("width_mult=0.125", "in_chans=3"))
    with pytest.raises(SystemExit) as info:
        timm_run.main(["--bn-checkpoint", str(checkpoint), str(script), "bn_checkpoint", "0"])
    assert info.value.code == 0 and sys.argv == [str(script), "bn_checkpoint", "0"]
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}}, bad)
    with pytest.raises(SystemExit) as info:
        timm_run.main(["--bn-checkpoint", str(bad), str(script), "bn_checkpoint", "0"])
    assert str(info.value.code).startswith("error: ") and "model_name" in str(info.value.code)
    assert "\n" not in str(info.value.code)


# ---------------------------------------------------------------- timm's real scripts (opt-in, see above)

needs_timm = pytest.mark.skipif(
    not TIMM_SCRIPTS, reason="set TIMM_SCRIPTS to a pytorch-image-models checkout"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    make_synthetic_imagenet(root, num_classes=3, train_per_class=6, val_per_class=4, min_size=36, max_size=48)
    return root


def _timm_script(repo: Path, python: str, env: dict, launcher: list[str], name: str, *args: str) -> str:
    command = [
        python,
        str(repo / "scripts" / "timm_run.py"),
        *launcher,
        str(Path(TIMM_SCRIPTS) / name),
        *args,
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@needs_timm
def test_timm_validate_train_and_benchmark_on_our_models(
    repo, python, cli_env, checkpoint, folder, tmp_path
) -> None:
    out = tmp_path / "validate.json"
    _timm_script(
        repo, python, cli_env, ["--bn-checkpoint", str(checkpoint)], "validate.py", str(folder),
        "--model", "bn_checkpoint", "-b", "4", "-j", "0", "--device", "cpu",
        "--results-file", str(out), "--results-format", "json",
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["model"] == "bn_checkpoint" and 0 <= result["top1"] <= 100 and result["img_size"] == 32
    _timm_script(
        repo, python, cli_env, ["--bn-checkpoint", str(checkpoint)], "train.py", str(folder),
        "--model", "bn_checkpoint", "--num-classes", "3", "-b", "4", "-j", "0", "--epochs", "1",
        "--val-split", "val", "--device", "cpu", "--output", str(tmp_path / "train"),
    )  # fmt: skip
    assert list((tmp_path / "train").glob("*/last.pth.tar"))
    stdout = _timm_script(
        repo, python, cli_env, [], "benchmark.py", "--model", "bn_inception_small",
        "--model-kwargs", "width_mult=0.125", "--img-size", "32", "-b", "2", "--bench", "inference",
        "--num-bench-iter", "5", "--num-warm-iter", "1", "--device", "cpu",
    )  # fmt: skip
    assert "infer_samples_per_sec" in stdout
