"""logger=wandb: what TensorBoard gets, W&B gets too (scalars, HParams, config), offline (no network)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from bn_inception.engine.trainer import train
from tests.engine.conftest import needs_fashion, train_config

wandb = pytest.importorskip("wandb", reason="pip install -r requirements-test.txt (wandb)")


def wandb_records(run_dir: Path) -> list:
    """Every record of the run's offline W&B files. wandb 0.31 has no reader of its own for them: the
    format is LevelDB's log (32 KiB blocks of chunks: crc32, length, kind 1 full / 2 first / 3 middle / 4
    last) after a 7-byte header, each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    records = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/*.wandb")):
        data, pos, buf = path.read_bytes(), 7, b""
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind == 0:
                break
            buf = chunk if kind in (1, 2) else buf + chunk
            if kind in (1, 4):
                records.append(wandb_internal_pb2.Record.FromString(buf))
    return records


@needs_fashion
@pytest.mark.usefixtures("one_thread")
def test_wandb_mirrors_scalars_hparams_and_config_and_a_resume_continues_its_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "runs" / "bn_x5" / "seed0"
    train(train_config("logger=wandb", "trainer.max_steps=4"), run_dir)
    train(train_config("logger=wandb", "trainer.max_steps=8"), run_dir)  # resumed at step 4

    records = wandb_records(run_dir)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert len(runs) == 2 and runs[0].run_id == runs[1].run_id  # one W&B run across the resume
    assert runs[0].display_name == "bn_x5/seed0" and runs[0].run_group == "bn_x5"
    config = {item.key: json.loads(item.value_json) for item in runs[0].config.update}
    assert config["optim"]["lr_mult"] == 5 and config["logger"] == "wandb"  # the resolved config
    assert config["hparams"]["experiment"] == "bn_x5" and config["hparams"]["norm"] == "batch"  # HParams

    history = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.HasField("history")
    ]
    steps = [row["_step"] for row in history]
    assert steps == [2, 4, 6, 8]  # every log/eval step, both segments, in order
    tags = set().union(*history)
    for tag in ("train/loss", "train/lr", "val/top1", "val/top5", "hparam/best_top1", "perf/img_per_s"):
        assert tag in tags, tag
    assert any(t.startswith("act/") for t in tags)  # Figure 1's percentiles too
    # TensorBoard is still written, with the same values
    results = json.loads((run_dir / "results.json").read_text())
    assert history[-1]["val/top1"] == pytest.approx(results["evals"][-1]["top1"])
