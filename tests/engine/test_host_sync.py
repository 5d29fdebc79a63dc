"""No host-device sync inside a plain training step (issue 23): the real loop (``train``, what
train.py runs) under ``benchmarks.gpu_check.HostSyncs``, a TorchFunctionMode that records every call that
makes a host wait for a GPU (device-to-host reads such as ``item``/``tolist``/``bool``, tensors built from
host data on a device, blocking moves). A GPU would run the same calls, so what the CPU run records is what
the GPU would wait for. Log, evaluation and finite-check steps read the device on purpose; every other step
(after the first, which builds one-time constants) must record nothing.

Before issue 23 the meter built ``torch.tensor(n, device=...)`` every step: one blocking copy and sync per
plain step, in every mode (``tensor(..., device=cpu) at bn_inception/engine/trainer.py``).
"""

from __future__ import annotations

import pytest

from benchmarks.gpu_check import step_syncs
from bn_inception.engine.trainer import Meter
from tests.engine.conftest import QUICK, needs_fashion

pytestmark = [needs_fashion, pytest.mark.usefixtures("one_thread")]

RUN = [*QUICK, "resume=never", "trainer.max_steps=8", "trainer.eval_every=8", "trainer.log_every=4"]


@pytest.mark.parametrize(
    "mode",
    [
        (
            "experiment=bn_x5",
            "trainer.amp=none",
            "trainer.channels_last=false",
            "trainer.finite_check=device",
        ),
        ("model.norm=paper", "trainer.amp=bf16", "trainer.channels_last=true", "trainer.finite_check=device"),
        # LRN, dropout, ghost BN; the loss read every 3 steps by the sync-mode guard
        (
            "experiment=bn_baseline",
            "model.norm=ghost",
            "model.ghost_batch_size=16",
            "trainer.amp=bf16",
            "trainer.finite_check=sync",
            "trainer.finite_check_every=3",
        ),
    ],  # fmt: skip
    ids=["fp32", "bf16-channels-last-paper-bn", "lrn-dropout-ghost-bn-sync-check"],
)
def test_a_plain_training_step_makes_no_host_sync(tmp_path, mode):
    events, plain = step_syncs([*RUN, *mode], tmp_path)
    assert plain and {step: events[step] for step in plain if events.get(step)} == {}
    # The recorder sees what the loop reads on purpose: the meter at the log step, the guard's loss reads.
    assert any("tolist()" in e for e in events[4])
    if "trainer.finite_check=sync" in mode:
        # the guard's reads (step 1 also starts the DataLoader's iterator, whose seed is a CPU item())
        def ours(e: str) -> bool:
            return "item()" in e and "bn_inception" in e

        reads = [s for s in range(1, 8) if any(ours(e) for e in events.get(s, []))]
        assert reads == [3, 6]


def test_the_recorder_finds_a_sync_added_to_the_step(tmp_path, monkeypatch):
    """The check can fail: a loss.item() per step (as a naive meter would do) shows on every plain step."""
    add = Meter.add

    def reading_add(self, loss, logits, labels):
        loss.item()
        add(self, loss, logits, labels)

    monkeypatch.setattr(Meter, "add", reading_add)
    events, plain = step_syncs([*RUN, "trainer.finite_check=device"], tmp_path)
    assert all(any(e.startswith("item() at ") and "test_host_sync.py" in e for e in events[s]) for s in plain)
