import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from irecon.errors import IreconError
from irecon.files import atomic_write, check_writable_folder, exclusive_lock


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with atomic_write(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_text("new")
        assert path.read_text() == "old"
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_without_overwrite_an_existing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with atomic_write(path, overwrite=False) as tmp:
        tmp.write_text("first")
    with pytest.raises(IreconError, match="file exists; pass --overwrite"):
        with atomic_write(path, overwrite=False) as tmp:
            tmp.write_text("second")
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


HOLD_LOCK = """
import sys, time
from irecon.files import exclusive_lock
with exclusive_lock(sys.argv[1], "is busy ({holder})"):
    print("locked", flush=True)
    time.sleep(120)
"""


def hold_lock(path: Path) -> "subprocess.Popen[str]":
    """Another process that holds ``path``'s lock until it is killed (prints once it holds it)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


@pytest.mark.slow
def test_a_lock_held_by_another_process_is_refused_naming_it_and_freed_by_kill_9(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    holder = hold_lock(lock)
    try:
        with pytest.raises(IreconError) as caught:
            with exclusive_lock(lock, "is busy ({holder})"):
                pass
        assert caught.value.path == str(tmp_path)
        assert re.fullmatch(
            rf"is busy \(pid {holder.pid} on {re.escape(socket.gethostname())}, started \d{{4}}-\d\d-\d\d "
            r"\d\d:\d\d:\d\d UTC\)",
            caught.value.problem,
        ), caught.value.problem
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
    with exclusive_lock(lock, "is busy ({holder})"):
        assert f'"pid": {os.getpid()}' in lock.read_text()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_folder_that_takes_no_new_files_is_not_called_missing() -> None:
    with pytest.raises(IreconError) as caught:
        check_writable_folder("/proc/irecon-output", create=False)
    assert str(caught.value) == "/proc: not writable (a file system that does not take new files)"


def test_staged_outputs_appear_together_or_not_at_all_and_errors_name_the_final_path(tmp_path: Path) -> None:
    from irecon.files import staged_outputs

    with pytest.raises(IreconError) as caught:
        with staged_outputs(tmp_path) as staging:
            (staging.area / "a.h5").write_text("a")
            raise IreconError("no space left on device", staging.area / "b_dicom")
    assert str(caught.value) == f"{tmp_path / 'b_dicom'}: no space left on device"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "b.nii.gz").write_text("earlier")
    with pytest.raises(IreconError, match="file exists; pass --overwrite"):
        with staged_outputs(tmp_path) as staging:
            (staging.area / "a.h5").write_text("a")
            (staging.area / "b.nii.gz").write_text("b")
            staging.commit(overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.nii.gz"]  # a.h5 taken back, b.nii.gz kept
    assert (tmp_path / "b.nii.gz").read_text() == "earlier"
    with staged_outputs(tmp_path) as staging:
        (staging.area / "a.h5").write_text("a")
        (staging.area / "b_dicom").mkdir()
        moved = staging.commit(overwrite=True)
    assert moved == [tmp_path / "a.h5", tmp_path / "b_dicom"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.nii.gz", "b_dicom"]


def test_a_forked_child_does_not_keep_its_parents_lock(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    started, ready = os.pipe()
    with exclusive_lock(lock, "is busy ({holder})"):
        child = os.fork()
        if child == 0:  # a DataLoader worker, say, that outlives the lock's holder
            os.write(ready, b"1")  # the fork hooks have run once os.fork returns here
            time.sleep(5)
            os._exit(0)
        assert os.read(started, 1) == b"1"
    try:
        with exclusive_lock(lock, "is busy ({holder})"):  # the child is alive but holds nothing
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(started)
        os.close(ready)
