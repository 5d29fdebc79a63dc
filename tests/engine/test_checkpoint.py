import errno
import os
import pickle
import subprocess
import sys

import pytest
import torch

from bn_inception.engine import checkpoint as ckpt_mod
from bn_inception.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "step": int(value), "config": {"name": "x", "lr": 0.1}}


def test_roundtrip_with_weights_only(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(_state(1.0), path)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 1 and torch.equal(loaded["model"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left behind


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match="free some disk space"):
        save_checkpoint(_state(2.0), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_torchs_own_disk_full_error_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, repo):
    """A real write failure, not a stand-in: torch's writer meets EFBIG past a file-size limit and raises
    "[enforce fail at inline_container.cc] unexpected pos", with the OSError only as its context."""
    code = (
        "import resource, signal, sys, torch\n"
        "from bn_inception.engine.checkpoint import CheckpointError, save_checkpoint\n"
        "save_checkpoint({'model': {}, 'step': 1}, sys.argv[1])\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n    save_checkpoint({'model': {'w': torch.zeros(100_000)}, 'step': 2}, sys.argv[1])\n"
        "except CheckpointError as e:\n    print(e)\n"
    )
    path = tmp_path / "checkpoints" / "last.pt"
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=repo, capture_output=True, text=True)
    message = f"could not write checkpoint {path}: File too large;"
    assert out.stdout.startswith(message), out.stdout + out.stderr
    assert out.stdout.count("\n") == 1 and "inline_container" not in out.stdout
    assert load_checkpoint(path)["step"] == 1 and [p.name for p in path.parent.iterdir()] == ["last.pt"]


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    # the same payload as a plain pickle file
    path.write_bytes(pickle.dumps({"model": _Payload(str(marker))}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_corrupt_missing_or_truncated_files_give_one_line_errors(tmp_path, content):
    path = tmp_path / "c.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["model: bn_x5\n", '{"model": 1}', "#!/bin/sh\necho hi\n", "hello"])
def test_a_text_file_is_not_a_checkpoint_and_torchs_advice_is_never_repeated(tmp_path, text):
    path = tmp_path / "best.pt"
    path.write_text(text)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path} is not a checkpoint (not a file written by torch.save)")
    torch.save({"model": {}, "payload": _Payload(str(tmp_path / "pwned"))}, path)
    with pytest.raises(CheckpointError, match=r"refused: loading it would call posix.system") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value) and not (tmp_path / "pwned").exists()


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(_state(3.0), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_follow_the_umask_so_colleagues_can_read_them(tmp_path, umask, mode):
    from bn_inception.files import write_json

    old = os.umask(umask)
    try:
        save_checkpoint(_state(1.0), tmp_path / "last.pt")
        write_json(tmp_path / "results.json", {"status": "completed"})
    finally:
        os.umask(old)
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == mode
