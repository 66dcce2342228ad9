"""Surviving faults: the non-finite guard, run directories, pickle-free checkpoints, exact self-play resume,
and SIGTERM / SIGINT / SIGKILL in real subprocesses."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prefkit.cli import main, resume_command
from prefkit.errors import RunStopped
from prefkit.train.guard import NonFiniteGuard
from train_fixtures import write_preferences, write_tiny_model

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    return {"model": str(write_tiny_model(root / "model")), "data": str(write_preferences(root / "prefs.jsonl")),
            "cache": str(root / "cache")}


def train_args(workspace, out, *extra):
    return ["train", "--model", workspace["model"], "--data", workspace["data"], "--output-dir", str(out),
            "batch_size=4", "learning_rate=1e-3", "logging_steps=1", "progress=false",
            f"cache_dir={workspace['cache']}", *extra]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def weights(path: Path) -> dict[str, torch.Tensor]:
    """A saved model's weights, or a LoRA run's adapter weights."""
    from safetensors.torch import load_file

    adapter = path / "adapter_model.safetensors"
    return load_file(str(adapter if adapter.is_file() else path / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


# ---- the non-finite guard ---------------------------------------------------------------------------------

def test_the_guard_skips_isolated_bad_steps_and_stops_a_diverged_run():
    guard = NonFiniteGuard(limit=3)
    assert guard.allows(1, 0.7, 1.0)
    assert not guard.allows(2, float("nan"), 1.0) and not guard.allows(3, 0.7, float("inf"))
    assert guard.allows(4, 0.6, 2.0) and guard.skipped == 2  # an isolated spike is skipped, then training goes on
    assert not guard.allows(5, float("nan"), 1.0) and not guard.allows(6, float("nan"), 1.0)
    with pytest.raises(RunStopped, match="steps 5-7") as stopped:
        guard.allows(7, float("nan"), float("nan"))
    assert stopped.value.exit_code == 1


def test_a_diverging_run_stops_with_one_line_and_never_saves_non_finite_weights(workspace, tmp_path, capsys):
    code = main(train_args(workspace, tmp_path, "learning_rate=1e25", "max_steps=40", "save_steps=1",
                           "keep_checkpoints=40"))
    err = capsys.readouterr().err
    assert code == 1 and "training diverged" in err and "Traceback" not in err
    assert not (tmp_path / "final").exists()
    saved = sorted((tmp_path / "checkpoints").iterdir())
    assert saved, "the steps before the divergence were checkpointed"
    for folder in saved:
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for t in load_file(str(folder / "model.safetensors")).values())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_steps"] >= 1


# ---- run directories --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    assert main(train_args(workspace, out, "max_steps=3", "save_steps=1", "keep_checkpoints=5")) == 0
    return out


def test_an_earlier_run_is_left_untouched_without_resume_or_overwrite(workspace, finished, capsys):
    before = snapshot(finished)
    assert main(train_args(workspace, finished, "max_steps=2")) == 2
    err = capsys.readouterr().err
    assert str(finished) in err and "--resume" in err and "--overwrite" in err and "Traceback" not in err
    assert snapshot(finished) == before


def test_resume_refuses_changed_settings_and_names_them(workspace, finished, capsys):
    before = snapshot(finished)
    assert main(train_args(workspace, finished, "max_steps=3", "learning_rate=2e-3", "--resume")) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "0.001 -> 0.002" in err
    assert snapshot(finished) == before


def test_overwrite_removes_the_earlier_run(workspace, tmp_path):
    assert main(train_args(workspace, tmp_path, "max_steps=3", "save_steps=1", "keep_checkpoints=5")) == 0
    (tmp_path / "notes.txt").write_text("mine")  # not prefkit's: kept
    assert main(train_args(workspace, tmp_path, "max_steps=1", "save_steps=1", "--overwrite")) == 0
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1] and (tmp_path / "notes.txt").read_text() == "mine"


def test_a_run_that_stopped_before_training_can_simply_be_run_again(workspace, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "say red", "chosen": "red"}\n')  # no rejected completion
    args = ["--data", str(bad)]
    assert main(train_args(workspace, tmp_path / "run", "max_steps=1") + args) == 2
    assert "rejected" in capsys.readouterr().err
    assert main(train_args(workspace, tmp_path / "run", "max_steps=1")) == 0  # no --overwrite needed


def test_no_clipping_still_measures_the_gradient_norm(workspace, tmp_path):
    assert main(train_args(workspace, tmp_path, "max_steps=1", "max_grad_norm=null")) == 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["grad_norm"] > 0


def test_an_output_dir_that_cannot_be_a_directory_is_one_line(workspace, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(train_args(workspace, tmp_path / "file" / "run")) == 2
    err = capsys.readouterr().err
    assert "is a file, not a directory" in err and "Traceback" not in err


def test_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(workspace, tmp_path, capsys, monkeypatch):
    import errno

    from prefkit.train import checkpoint

    assert main(train_args(workspace, tmp_path, "max_steps=1", "save_steps=1")) == 0
    real = checkpoint.save_state

    def full(directory, name, state):
        if name == "optimizer":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(directory, name, state)

    monkeypatch.setattr(checkpoint, "save_state", full)
    assert main(train_args(workspace, tmp_path, "max_steps=2", "save_steps=1", "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "could not write checkpoint" in err and "No space left on device" in err and "Traceback" not in err
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


# ---- no pickle --------------------------------------------------------------------------------------------

class Planted:
    """Unpickling this creates a marker file: proof that a load executed code."""

    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def plant(path: Path, marker: Path) -> None:
    Planted.marker = str(marker)
    path.write_bytes(pickle.dumps(Planted()))  # what torch.load(weights_only=False) or pickle.load would run


def test_no_file_a_run_writes_is_a_pickle(workspace, finished):
    for path in finished.rglob("*"):
        if path.is_file():
            assert path.suffix not in (".pkl", ".bin", ".pt", ".pth"), path
            head = path.read_bytes()[:2]
            assert head != b"\x80\x04" and head != b"PK", path  # pickle protocol 4, or torch.save's zip


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "scheduler.safetensors",
                                  "rng-0.safetensors", "optimizer.json", "trainer_state.json"])
def test_a_planted_pickle_in_a_checkpoint_never_runs(workspace, tmp_path, capsys, name):
    assert main(train_args(workspace, tmp_path, "max_steps=2", "save_steps=1")) == 0
    marker = tmp_path / "executed"
    plant(tmp_path / "checkpoints" / "step-00000002" / name, marker)
    assert main(train_args(workspace, tmp_path, "max_steps=2", "save_steps=1", "--resume")) == 2
    err = capsys.readouterr().err
    assert "cannot load this checkpoint" in err and "Traceback" not in err
    assert not marker.exists()


# ---- self-play resume -------------------------------------------------------------------------------------

def selfplay_config(initial, out, **values):
    from prefkit.train.config import load_config
    from prefkit.selfplay.config import SelfPlayConfig

    flags = dict(model=initial, output_dir=str(out), prompts_per_iteration=4, samples_per_prompt=3,
                 max_new_tokens=4, eval_limit=4, batch_size=4, epochs=1, learning_rate=1e-3, progress=False)
    flags.update({k: v for k, v in values.items() if not isinstance(v, dict)})
    overrides = [f"{k}={json.dumps(v)}" for k, v in values.items() if isinstance(v, dict)]
    return load_config(None, flags, overrides, kind=SelfPlayConfig)


@pytest.mark.parametrize("loss, extra", [("inpo", {}), ("mpo", {"refresh_every": 2}),
                                         ("mpo", {"refresh_every": 2, "lora": {"r": 4, "dropout": 0.1}})],
                         ids=["inpo", "mpo", "mpo-lora"])
def test_self_play_resume_keeps_the_initial_model_as_reference_until_a_magnet_is_saved(initial, tmp_path,
                                                                                        loss, extra):
    from prefkit.selfplay.loop import selfplay

    selfplay(selfplay_config(initial, tmp_path / "once", loss=loss, iterations=3, **extra))
    selfplay(selfplay_config(initial, tmp_path / "twice", loss=loss, iterations=1, **extra))
    selfplay(selfplay_config(initial, tmp_path / "twice", loss=loss, iterations=3, resume=True, **extra))
    assert_same_weights(tmp_path / "once" / "final", tmp_path / "twice" / "final")
    from safetensors.torch import load_file

    for t in (2, 3):  # the log-probs each iteration trained against are the same, not only the end
        once, twice = (load_file(str(tmp_path / run / f"iter-{t:04d}" / "logps.safetensors"))
                       for run in ("once", "twice"))
        assert torch.equal(once["ref"], twice["ref"]) and torch.equal(once["prev"], twice["prev"]), t


def test_a_planted_pickle_in_self_play_tables_never_runs(initial, tmp_path, capsys):
    from prefkit.selfplay.loop import selfplay

    selfplay(selfplay_config(initial, tmp_path, loss="inpo", iterations=1))
    (tmp_path / "state.json").write_text(json.dumps({"completed": 0, "magnet": 0}))  # iteration 1 again
    marker = tmp_path / "executed"
    plant(tmp_path / "iter-0001" / "logps.safetensors", marker)
    with pytest.raises(Exception, match="not a readable safetensors file"):
        selfplay(selfplay_config(initial, tmp_path, loss="inpo", iterations=1, resume=True))
    assert not marker.exists()


# ---- signals and kills in real processes ------------------------------------------------------------------

def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every run: bit-identical sums
    return subprocess.Popen([sys.executable, "-m", "prefkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path: Path, process: subprocess.Popen, lines: int = 1, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= lines:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not get {lines} lines (exit {process.poll()})")


@pytest.fixture(scope="module")
def uninterrupted(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    process = start(train_args(workspace, out, "max_steps=60"))
    assert process.wait(timeout=300) == 0, process.stderr.read()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_resume_is_bit_exact(workspace, uninterrupted, tmp_path, signum):
    args = train_args(workspace, tmp_path, "max_steps=60")
    process = start(args)
    wait_for(tmp_path / "metrics.jsonl", process, lines=3)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert resume_command(["prefkit", *args]) in err  # the line to run, ready to paste
    assert list((tmp_path / "checkpoints").iterdir())
    resumed = start(args + ["--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same_weights(uninterrupted / "final", tmp_path / "final")


def test_the_first_signal_asks_to_stop_and_a_second_exits_at_once(monkeypatch, capsys):
    from prefkit.train import signals

    exits = []
    monkeypatch.setattr(signals.os, "_exit", exits.append)  # the real one would end the test process
    before = signal.getsignal(signal.SIGTERM)
    with signals.StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and not exits
        os.kill(os.getpid(), signal.SIGTERM)
        assert exits == [128 + signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before
    err = capsys.readouterr().err
    assert "finishing this step" in err and "again: exiting now" in err
    stopped = stop.stopped("checkpoint X")
    assert stopped.exit_code == 143 and stopped.resumable and "stopped by SIGTERM; saved checkpoint X" in str(stopped)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["lora.r=4"]], ids=["full", "lora"])
def test_self_play_stops_on_sigterm_and_resumes_bit_exact(initial, tmp_path, extra):
    args = ["selfplay", "--model", initial, "loss=mpo", "refresh_every=2", "iterations=3",
            "prompts_per_iteration=4", "samples_per_prompt=3", "max_new_tokens=4", "eval_limit=4", "batch_size=4",
            "epochs=1", "learning_rate=1e-3", "progress=false", *extra]
    once = start(args + ["--output-dir", str(tmp_path / "once")])
    assert once.wait(timeout=300) == 0, once.stderr.read()
    twice = start(args + ["--output-dir", str(tmp_path / "twice")])
    wait_for(tmp_path / "twice" / "iter-0001" / "samples.json", twice)
    twice.send_signal(signal.SIGTERM)
    _, err = twice.communicate(timeout=120)
    assert twice.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in err, err
    resumed = start(args + ["--output-dir", str(tmp_path / "twice"), "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same_weights(tmp_path / "once" / "final", tmp_path / "twice" / "final")


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    """One point per loop here; `python bench/torture_resume.py` runs 20 per scenario (docs/training.md)."""
    sys.path.insert(0, str(BENCH))
    try:
        from torture_resume import torture
    finally:
        sys.path.remove(str(BENCH))
    records = torture("dpo", 1, tmp_path, seed=1) + torture("inpo", 1, tmp_path, seed=1)
    assert all(r["identical"] for r in records), records
