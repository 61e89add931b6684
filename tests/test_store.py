"""The run store: round trip, killed runs, SIGKILL mid-run, atomic writes."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest

from lsml_tui.trainer.events import CommandApplied
from lsml_tui.trainer.store.schema import CONFIG_NAME, DB_NAME, write_atomic
from lsml_tui.trainer.store.writer import RunStore
from lsml_tui.trainer.store.reader import list_runs, open_run

CONFIG = {"model": "mlp", "optimizer": "adam", "norm": "none"}


def test_what_is_written_reads_back(tmp_path):
    st = RunStore.create(tmp_path, CONFIG, 'model = "mlp"\n')
    for step in range(5):
        st.record_step(step, 100.0 + step, 2.0 - step / 10, 1e-3, 0.5 * step, 0.25 * step,
                       step % 2 == 1, 64.0)
    st.record_val(4, 105.0, 1.5)
    st.record_event(CommandApplied(3, "lr 0.01", "lr 0.001 -> 0.01", {"lr": 0.01}))
    st.set_status("finished", {"steps": 5})
    st.close()
    assert (st.run_dir / CONFIG_NAME).read_text() == 'model = "mlp"\n'
    with open_run(st.run_dir) as r:
        info, steps = r.info(), r.steps()
        assert r.val() == {"step": [4], "loss": [1.5]}
        event, = r.events()
        assert r.integrity_ok()
    assert (info.status, info.steps, info.summary, info.model) == ("finished", 5, {"steps": 5}, "mlp")
    assert steps["step"] == [0, 1, 2, 3, 4]
    assert steps["loss"] == [2.0 - s / 10 for s in range(5)]
    assert steps["clipped"] == [0, 1, 0, 1, 0]
    assert steps["grad_norm"] == [0.5 * s for s in range(5)]
    assert steps["grad_norm_clipped"] == [0.25 * s for s in range(5)]
    assert (event["kind"], event["step"], event["changes"]) == ("CommandApplied", 3, {"lr": 0.01})
    assert info.final_loss == 2.0 - 4 / 10
    assert [i.id for i in list_runs(tmp_path)] == [st.run_id]


def test_a_run_left_running_by_a_dead_process_opens_as_killed(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead_pid = int(child.stdout)
    st = RunStore.create(tmp_path, CONFIG, "")
    st.record_step(0, 123.0, 1.0, 1e-3, 1.0, 1.0, False, 1.0)
    st.close()
    import sqlite3
    con = sqlite3.connect(st.run_dir / DB_NAME)
    with con:
        con.execute("UPDATE run SET pid = ?", (dead_pid,))
    con.close()
    with open_run(st.run_dir) as r:
        info = r.info()
    assert info.status == "killed" and info.ended == 123.0   # ended at its last recorded step

    live = RunStore.create(tmp_path, CONFIG, "")                # this process is alive
    with open_run(live.run_dir) as r:
        assert r.info().status == "running"
    live.close()


def test_sigkill_mid_run_keeps_everything_up_to_about_a_second_before(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "lsml_tui.tui.cli", "--headless", "--no-progress",
                             "--model", "mlp", "--layers", "1", "--width", "16", "--steps", "10000000",
                             "--runs-dir", str(runs)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            dbs = list(runs.glob(f"*/{DB_NAME}"))
            if dbs:
                with open_run(dbs[0].parent) as r:
                    if r.info().steps >= 200:
                        break
            time.sleep(0.2)
        else:
            pytest.fail("the run never recorded 200 steps")
        time.sleep(1.0)                  # let it train on; the kill lands mid-stream
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with open_run(dbs[0].parent) as r:
        info, steps = r.info(), r.steps()
        assert r.integrity_ok()
    assert info.status == "killed"
    assert steps["step"] == list(range(len(steps["step"])))   # no gaps
    assert steps["time"][-1] >= killed_at - 1.0                # lost at most the last second
    assert all(math.isfinite(x) for x in steps["loss"])


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    write_atomic(target, "first")
    assert target.read_text() == "first"

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_atomic(target, "second")
    assert target.read_text() == "first"
    assert os.listdir(tmp_path) == ["report.html"]     # no temporary left behind


def test_a_burst_of_rows_while_writes_succeed_is_never_dropped(tmp_path):
    """The bound on held rows is for a disk that fails (then metric rows past it are
    dropped and counted); a burst larger than it, while writes succeed, is all written."""
    store = RunStore.create(tmp_path, CONFIG, "", flush_interval=0.5)
    store.max_pending = 10
    for step in range(1000):                    # queued before the writer's first batch
        store.record_step(step, 0.0, 1.0, 0.1, 1.0, 1.0, False, 100.0)
    store.close()
    with open_run(store.run_dir) as r:
        assert r.steps()["step"] == list(range(1000))
    assert sum(store.dropped.values()) == 0


def test_a_run_is_on_disk_before_its_end_is_announced(tmp_path):
    """A dashboard reads the store once told that the run finished: every step, the final
    status and the RunFinished event are committed before the event leaves the trainer,
    however slowly the writer batches (here every second, longer than the whole run)."""
    from lsml_tui.trainer.config import RunConfig, to_toml
    from lsml_tui.trainer.events import RunFinished
    from lsml_tui.trainer.loop import Trainer
    from lsml_tui.trainer.validate import resolve

    cfg = resolve(RunConfig(model="mlp", layers=1, width=16, steps=50, runs_dir=str(tmp_path)))
    store = RunStore.create(tmp_path, cfg.to_dict(), to_toml(cfg), flush_interval=1.0)
    seen = {}

    def sink(batch):
        if any(isinstance(e, RunFinished) for e in batch):
            with open_run(store.run_dir) as r:
                seen.update(steps=r.steps()["step"], status=r.info().status,
                            finished=len(r.events("RunFinished")))
    Trainer(cfg, sink=sink, store=store).run()
    store.close()
    assert seen == {"steps": list(range(50)), "status": "finished", "finished": 1}


def test_sync_returns_once_what_was_queued_is_committed(tmp_path):
    st = RunStore.create(tmp_path, CONFIG, 'model = "mlp"\n', flush_interval=2.0)
    st.record_step(0, 100.0, 2.0, 1e-3, 0.5, 0.5, False, 64.0)
    assert st.sync(timeout=30)
    with open_run(st.run_dir) as r:
        assert r.steps()["step"] == [0]         # committed while the store stays open
    assert st.sync(timeout=30)                  # nothing queued: returns as well
    st.close()
