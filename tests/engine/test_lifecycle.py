"""A run's lifecycle loses nothing: signals and kills at random points, a second launch on the same
directory, a kill between the two checkpoint files, divergence in any tensor, a full disk."""

from __future__ import annotations

import errno
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bn_inception.engine.checkpoint as checkpoint_module
import bn_inception.engine.loop as loop_module
import bn_inception.engine.trainer as trainer_module
from bn_inception.engine.checkpoint import CheckpointError, load_checkpoint
from bn_inception.engine.signals import EXIT_INTERRUPTED
from bn_inception.engine.trainer import LOCK_NAME, train
from tests.engine.conftest import QUICK, REPO, needs_fashion, train_config

pytestmark = needs_fashion

LONGER = ["experiment=bn_x5", "trainer.max_steps=40", "trainer.eval_every=8", "model.drop_rate=0.2"]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def launch(cli_env, run_dir: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", *QUICK, *overrides]
    return subprocess.Popen(
        cmd, cwd=REPO, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_signals_and_kills_at_random_points_end_like_an_uninterrupted_run(cli_env, tmp_path):
    straight = tmp_path / "straight"
    assert launch(cli_env, straight, *LONGER).wait(timeout=300) == 0

    run_dir, rng, interrupted = tmp_path / "interrupted", random.Random(1234), 0
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGUSR1):
        proc = launch(cli_env, run_dir, *LONGER)
        for line in proc.stdout:  # wait until it trains, then a random moment later
            if "| step " in line:
                break
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(sig)
        output = proc.stdout.read()
        code = proc.wait(timeout=120)
        if code == 0:
            break  # it finished first
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
            continue
        interrupted += 1
        assert code == EXIT_INTERRUPTED, output[-2000:]
        res = results(run_dir)
        assert res["status"] == "interrupted" and "continue:" in output
        assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == res["steps"]
        assert "Traceback" not in output
    assert interrupted >= 2
    assert launch(cli_env, run_dir, *LONGER).wait(timeout=300) == 0

    a, b = results(straight), results(run_dir)
    assert b["status"] == "completed" and b["steps"] == 40
    keys = ("step", "top1", "top5", "val_loss", "train_loss")
    assert [[e[k] for k in keys] for e in a["evals"]] == [[e[k] for k in keys] for e in b["evals"]]
    sa = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    sb = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # TensorBoard readers see one curve: no doubled-back steps, the resumed steps' own values kept
    for tag in ("val/top1", "train/loss"):
        assert scalars(straight, tag) == scalars(run_dir, tag), tag
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / LOCK_NAME).exists()


def test_a_second_launch_on_a_busy_directory_is_refused_and_changes_nothing(cli_env, tmp_path):
    run_dir = tmp_path / "busy"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("the running job's config\n")
    (run_dir / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                 "started": time.time(), "token": "x"}))  # fmt: skip
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    proc = launch(cli_env, run_dir, "experiment=bn_x30")
    output = proc.stdout.read()
    assert proc.wait(timeout=120) == 1
    error = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"pid {os.getpid()}" in error[0] and "in use" in error[0]
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.usefixtures("one_thread")
def test_a_refused_or_idle_relaunch_leaves_the_runs_record_as_it_was(tmp_path):
    def record(lr: str) -> dict[str, str]:  # what train.py passes: Hydra's record of this launch
        return {".hydra/config.yaml": f"optim:\n  lr: {lr}\n", ".hydra/overrides.yaml": f"- optim.lr={lr}\n"}

    short = ["trainer.max_steps=4", "trainer.eval_every=4", "optim.lr=0.0075"]
    train(train_config(*short), tmp_path, run_files=record("0.0075"))
    before = {p.name: p.read_text() for p in (tmp_path / ".hydra").iterdir()}
    with pytest.raises(trainer_module.TrainingError, match="optim.lr"):
        train(train_config(*short, "optim.lr=0.1"), tmp_path, run_files=record("0.1"))
    assert {p.name: p.read_text() for p in (tmp_path / ".hydra").iterdir()} == before
    done = train(train_config(*short), tmp_path, run_files=record("relaunched"))
    assert done["unchanged"] and {p.name: p.read_text() for p in (tmp_path / ".hydra").iterdir()} == before


@pytest.mark.usefixtures("one_thread")
def test_damage_to_last_pt_in_place_leaves_best_pt_to_continue_from(tmp_path):
    run_dir, eight = tmp_path / "run", ["trainer.max_steps=8", "trainer.eval_every=4"]
    train(train_config("trainer.max_steps=4", "trainer.eval_every=4"), run_dir)
    last, best = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    assert load_checkpoint(best)["step"] == 4  # the best step is the last one: the normal state
    last.write_bytes(last.read_bytes()[:1000])  # truncated in place (same inode), as a bad copy does
    with pytest.raises(CheckpointError, match="corrupt or truncated.*best.pt"):
        train(train_config(*eight), run_dir)
    assert train(train_config(*eight, f"resume={best}"), run_dir)["steps"] == 8
    last.unlink()  # deleted to save space, or moved away: starting afresh here would overwrite best.pt
    kept = best.read_bytes()
    with pytest.raises(trainer_module.TrainingError, match="best.pt but no last.pt; continue from it with"):
        train(train_config(*eight), run_dir)
    assert best.read_bytes() == kept
    # a checkpoint that is not a run's (no data-order position) is one line too, not a KeyError
    foreign = load_checkpoint(best)
    del foreign["loader"]
    checkpoint_module.save_checkpoint(foreign, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="no 'loader' entry"):
        train(train_config(*eight, f"resume={tmp_path / 'foreign.pt'}"), tmp_path / "other")


@pytest.mark.usefixtures("one_thread")
def test_a_kill_between_last_and_best_is_repaired_on_relaunch(tmp_path, monkeypatch, caplog):
    run_dir = tmp_path / "run"
    linked = []

    def killed_at_the_second_link(source, path):
        linked.append(path)
        if len(linked) == 2:
            raise KeyboardInterrupt  # SIGKILL's effect: the process is gone right after last.pt
        return real_link(source, path)

    real_link = loop_module.copy_checkpoint
    monkeypatch.setattr(loop_module, "copy_checkpoint", killed_at_the_second_link)
    with pytest.raises(KeyboardInterrupt):
        train(train_config("trainer.max_steps=8", "trainer.eval_every=2"), run_dir)
    monkeypatch.undo()
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["step"] < last["best_step"] == last["step"]
    (run_dir / "checkpoints" / ".last.pt.0badc0de.tmp").write_bytes(b"half a save")

    final = train(train_config("trainer.max_steps=8", "trainer.eval_every=2"), run_dir)
    assert "repaired" in caplog.text
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["step"] == final["best_step"] == results(run_dir)["best_step"]
    assert not list(run_dir.rglob("*.tmp"))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("poison", ["val_loss", "bn_buffer"])
def test_a_non_finite_val_loss_or_bn_statistic_is_divergence(tmp_path, monkeypatch, poison):
    real_validation, calls = loop_module.run_validation, []

    def poisoned(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2 and poison == "bn_buffer":
            next(b for name, b in model.named_buffers() if name.endswith("running_var")).fill_(math.inf)
        metrics = real_validation(model, *args, **kwargs)
        return {**metrics, "loss": math.nan} if len(calls) == 2 and poison == "val_loss" else metrics

    monkeypatch.setattr(loop_module, "run_validation", poisoned)
    res = train(train_config("trainer.max_steps=8", "trainer.eval_every=2"), tmp_path)
    assert res["status"] == "diverged" and res["diverged_at_step"] == 4
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["step"] == 2 and all(
        torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point()
    )
    assert res["checkpoints"]["last"] == str(tmp_path / "checkpoints" / "last.pt")


@pytest.mark.usefixtures("one_thread")
def test_a_run_that_diverges_before_any_checkpoint_names_none(tmp_path):
    from bn_inception import train as train_script

    res = train(train_config("experiment=inception", "optim.lr=1e6", "trainer.eval_every=12"), tmp_path)
    assert res["status"] == "diverged" and res["checkpoints"] == {} and res["diverged_at_step"] < 12
    text = train_script.summary(res, tmp_path, tmp_path)
    assert "checkpoints: none" in text and "evaluate:" not in text and ".pt" not in text


@pytest.mark.usefixtures("one_thread")
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real_save, saves = checkpoint_module.torch.save, []

    def disk_full_at_the_second_save(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full_at_the_second_save)
    with pytest.raises(CheckpointError) as info:
        train(train_config("trainer.max_steps=8", "trainer.eval_every=2"), tmp_path)
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and "free some disk space" in message
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2
    assert results(tmp_path)["status"] == "failed" and not list(tmp_path.rglob("*.tmp"))
