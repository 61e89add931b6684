"""End to end in a real terminal: lsml-tui in tmux, driven by keys, checked in the run store."""

import collections
import contextlib
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lsml_tui.trainer.store.schema import DB_NAME
from lsml_tui.trainer.store.reader import list_runs

from tests.conftest import alive

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


def tmux(*args: str) -> str:
    return subprocess.run([TMUX, *args], capture_output=True, text=True).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_for(session: str, predicate, what: str, timeout: float = 90.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = screen(session)
        if predicate(text):
            return text
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; the screen was:\n{screen(session)}")


def quit_and_wait(session: str, done, timeout: float = 60.0) -> None:
    """Press q; the command line touches `done` once lsml-tui has exited."""
    tmux("send-keys", "-t", session, "q")
    deadline = time.time() + timeout
    while not done.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert done.exists(), "lsml-tui did not exit"


def step_on(text: str) -> int:
    m = re.search(r"step ([\d,]+) ", text.splitlines()[0] if text else "")
    return int(m.group(1).replace(",", "")) if m else -1


def test_train_pause_switch_optimizer_quit_in_tmux(tmp_path):
    session = f"lsml-e2e-{tmp_path.name}"[:40]
    runs = tmp_path / "runs"
    done = tmp_path / "exited"
    cmd = (f"{sys.executable} -m lsml_tui.tui.cli --model mlp --layers 1 --width 16 "
           f"--steps 1000000 --runs-dir {runs}; touch {done}")
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", cmd)
    try:
        wait_for(session, lambda t: step_on(t) > 50, "steps to advance")
        tmux("send-keys", "-t", session, "Space")
        text = wait_for(session, lambda t: "paused" in t.splitlines()[0], "paused")
        paused_at = step_on(text)
        time.sleep(1.0)
        assert step_on(screen(session)) == paused_at            # nothing trains while paused
        tmux("send-keys", "-t", session, "o")
        wait_for(session, lambda t: "adamw" in t and "(now)" in t, "the optimizer picker")
        tmux("send-keys", "-t", session, "Down", "Enter")        # adam (now) -> adamw
        wait_for(session, lambda t: "adamw" in t.splitlines()[0], "adamw in the status line")
        tmux("send-keys", "-t", session, "Space")
        wait_for(session, lambda t: step_on(t) > paused_at + 20, "training to resume")
        quit_and_wait(session, done)
    finally:
        tmux("kill-session", "-t", session)
    run, = list_runs(runs)
    assert run.status == "interrupted" and run.steps > paused_at + 20
    from lsml_tui.trainer.store.reader import open_run
    with open_run(run.run_dir) as r:
        applied = [(e["command"], e["step"]) for e in r.events("CommandApplied")]
    assert applied[0] == ("pause", paused_at)
    assert applied[1] == ("optimizer adamw", paused_at)          # applied while paused
    assert [c for c, _ in applied[2:]] == ["resume", "stop"]


def test_train_headless_then_open_export_and_list_in_tmux(tmp_path):
    """The history path a user follows: train, reopen read-only, export, list."""
    runs = tmp_path / "runs"
    subprocess.run([sys.executable, "-m", "lsml_tui.tui.cli", "--headless", "--no-progress",
                    "--model", "mlp", "--steps", "150", "--runs-dir", str(runs)], check=True)
    run, = list_runs(runs)
    session = f"lsml-open-{tmp_path.name}"[:40]
    done = tmp_path / "exited"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40",
         f"{sys.executable} -m lsml_tui.tui.cli open {run.run_dir}; touch {done}")
    try:
        wait_for(session, lambda t: step_on(t) == 150 and "finished" in t.splitlines()[0],
                 "every recorded step and the final status")
        tmux("send-keys", "-t", session, "e")
        deadline = time.time() + 60
        while not (Path(run.run_dir) / "report.csv").exists() and time.time() < deadline:
            time.sleep(0.2)                                        # csv is written last
        quit_and_wait(session, done)
    finally:
        tmux("kill-session", "-t", session)
    assert {p.name for p in Path(run.run_dir).glob("report.*")} == {
        "report.html", "report.md", "report.json", "report.csv"}
    listing = subprocess.run([sys.executable, "-m", "lsml_tui.tui.cli", "runs", "--runs-dir",
                              str(runs)], capture_output=True, text=True, check=True).stdout
    assert run.id in listing and "finished" in listing


def start_dashboard(tmp_path, name, shell="", training=True, args=""):
    """lsml-tui in tmux on a long MLP run; after it exits the shell writes the exit status
    and the terminal's mode (raw mode left on would show as -icanon -echo). The mode goes
    to a temporary name first: the test must never read the file half written. `shell`
    runs in the shell first; without `training`, returns while the trainer starts.

    COLUMNS and LINES (pytest exports 80x24) would override the pane's size for Textual;
    a terminal's shell does not export them."""
    session = f"lsml-{name}-{tmp_path.name}"[:40]
    runs, after = tmp_path / "runs", tmp_path / "after"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40",
         f"unset COLUMNS LINES; {shell}{sys.executable} -m lsml_tui.tui.cli --model mlp "
         f"--layers 1 --width 16 --steps 1000000 --runs-dir {runs} {args}; "
         f"echo $? > {after}.rc; "
         f"stty -a > {after}.tmp; mv {after}.tmp {after}")    # whole, or not there yet
    if training:
        wait_for(session, lambda t: step_on(t) > 30, "steps to advance")
    else:
        wait_for(session, lambda t: "starting the trainer" in t, "the dashboard")
    return session, runs, after


def trainer_and_ui(runs):
    """The trainer's pid is in the run store; the dashboard is the parent of the forkserver
    it forked from."""
    (db,) = runs.glob(f"*/{DB_NAME}")
    con = sqlite3.connect(db)
    pid, = con.execute("SELECT pid FROM run").fetchone()
    con.close()
    trainer = psutil.Process(pid)
    ui, = [p for p in trainer.parents() if "lsml_tui.tui.cli" in p.cmdline()]
    return trainer, ui


def wait_gone(process, timeout=30.0) -> bool:
    try:
        process.wait(timeout)
        return True
    except psutil.TimeoutExpired:
        return False


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGINT", "ctrl+c"])
def test_a_signal_or_ctrl_c_records_interrupted_and_leaves_no_orphan(tmp_path, how):
    session, runs, after = start_dashboard(tmp_path, "sig")
    try:
        trainer, ui = trainer_and_ui(runs)
        if how == "ctrl+c":
            tmux("send-keys", "-t", session, "C-c")     # a key in raw mode, not a signal
        else:
            ui.send_signal(getattr(signal, how))
        assert wait_gone(ui) and wait_gone(trainer), "a process outlived the signal"
        deadline = time.time() + 30
        while not after.exists() and time.time() < deadline:
            time.sleep(0.1)
        mode = after.read_text()
    finally:
        tmux("kill-session", "-t", session)
    run, = list_runs(runs)
    assert run.status == "interrupted"
    expected = 0 if how == "ctrl+c" else 128 + getattr(signal, how)   # as shells report it
    assert int(Path(f"{after}.rc").read_text()) == expected
    assert " icanon" in mode and " echo" in mode                 # the terminal is restored


def test_a_killed_dashboard_takes_its_trainer_down_with_the_run_recorded(tmp_path):
    session, runs, after = start_dashboard(tmp_path, "kill")
    try:
        trainer, ui = trainer_and_ui(runs)
        ui.send_signal(signal.SIGKILL)
        assert wait_gone(trainer), "the trainer outlived its dashboard"
    finally:
        tmux("kill-session", "-t", session)
    run, = list_runs(runs)
    assert run.status == "interrupted" and run.steps > 30


# -- the terminal goes away ------------------------------------------------------------------

CLOSED_BOUND = 15.0     # the bound: nothing of lsml-tui left this long after


def family(runs) -> list[psutil.Process]:
    """The dashboard (found by its command line) and every process under it, found while
    alive: once the dashboard is gone its children can no longer be found through it."""
    deadline = time.time() + 30
    while not (found := strays(runs)) and time.time() < deadline:
        time.sleep(0.1)
    assert found, "no dashboard found"
    return found


def strays(runs) -> list[psutil.Process]:
    """Any dashboard whose command line names this test's runs dir (the tmux shell's does
    too, as one string, so only an exact argument counts), and its children."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "lsml_tui.tui.cli" in cmd and str(runs) in cmd:
            with contextlib.suppress(psutil.NoSuchProcess):
                found += [p, *p.children(recursive=True)]
    return found


def left_after(procs, timeout: float = CLOSED_BOUND) -> str:
    """Wait up to `timeout` for every process to end; describe those that did not."""
    deadline = time.time() + timeout
    while alive(procs) and time.time() < deadline:
        time.sleep(0.1)
    return "; ".join(f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in alive(procs))


def kill_all(procs) -> None:
    """Whatever a failing test left running must not outlive it."""
    for p in alive(procs):
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


Dashboard = collections.namedtuple("Dashboard", "session runs after procs")


@contextlib.contextmanager
def ended_by_the_test(tmp_path, name, **start):
    """lsml-tui in tmux for the test to end; once it has, nothing of it may be running 15 s
    later. Whatever is left is killed, so no process outlives a failing test."""
    session, runs, after = start_dashboard(tmp_path, name, **start)
    procs = []
    try:
        procs = family(runs)
        yield Dashboard(session, runs, after, procs)
        left = left_after(procs)
        assert not left, f"still running {CLOSED_BOUND:.0f} s later: {left}"
    finally:
        tmux("kill-session", "-t", session)
        kill_all(procs + strays(runs))


def read_when_there(path: Path, timeout: float = 30.0) -> str:
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.1)
    return path.read_text()


@pytest.mark.parametrize("when", ["starting", "training", "quitting"])
def test_closing_the_terminal_ends_everything_with_the_run_recorded(tmp_path, when):
    """tmux kill-session is a closed window or a dropped SSH link: the pty hangs up, the shell
    dies of SIGHUP and the kernel sends SIGHUP (and SIGCONT) to the dashboard. While the
    trainer starts, while it trains, and just after q while the dashboard is stopping it."""
    with ended_by_the_test(tmp_path, "hup", training=when != "starting") as d:
        if when == "quitting":
            tmux("send-keys", "-t", d.session, "q")
            time.sleep(0.3)                 # the quit is under way: stopping the trainer
        tmux("kill-session", "-t", d.session)
    stored = list_runs(d.runs) if d.runs.exists() else []
    if when != "starting":                  # while torch loads there may be no run yet
        assert len(stored) == 1
    assert all(run.status == "interrupted" for run in stored), stored


def test_closing_the_terminal_stops_every_rank_of_a_data_parallel_run(tmp_path):
    """--workers 2: the dashboard's trainer process is the launcher of two ranks; a hang-up
    reaches all of them, rank 0 ships the stop and every rank ends at one step."""
    with ended_by_the_test(tmp_path, "ddp", args="--workers 2 --device cpu") as d:
        assert len(d.procs) >= 4            # dashboard, launcher and two ranks at least
        tmux("kill-session", "-t", d.session)
    run, = list_runs(d.runs)
    assert run.status == "interrupted" and run.summary["world_size"] == 2


def test_sigterm_ends_a_dashboard_whose_terminal_is_gone(tmp_path):
    """Before the fix the dashboard hung once its terminal closed, and SIGTERM, handled on
    the stuck event loop, did nothing. Sent 2 s after the terminal closed, it must end it
    (unless the dashboard has ended by itself)."""
    with ended_by_the_test(tmp_path, "term") as d:
        tmux("kill-session", "-t", d.session)
        time.sleep(2.0)
        with contextlib.suppress(psutil.NoSuchProcess):
            d.procs[0].send_signal(signal.SIGTERM)
    run, = list_runs(d.runs)
    assert run.status == "interrupted"


def test_a_terminal_gone_without_sighup_is_noticed(tmp_path):
    """The shell ignores SIGHUP (as under nohup), so the kernel's SIGHUP stops at the shell
    (the session leader) and nothing tells the dashboard its terminal hung up. It notices,
    ends as on SIGHUP, and the shell, which outlives the terminal, records how."""
    with ended_by_the_test(tmp_path, "nohup", shell="trap '' HUP; ") as d:
        tmux("kill-session", "-t", d.session)
    run, = list_runs(d.runs)
    assert run.status == "interrupted"
    assert int(read_when_there(Path(f"{d.after}.rc"))) == 128 + signal.SIGHUP


def test_a_second_signal_ends_at_once_with_the_terminal_restored(tmp_path):
    """The path the deadline takes, on a live terminal: the trainer stopped without the
    event loop, the terminal's mode restored, 128 + the signal."""
    with ended_by_the_test(tmp_path, "twice") as d:
        d.procs[0].send_signal(signal.SIGTERM)
        time.sleep(0.1)                     # two deliveries, not one pending twice
        d.procs[0].send_signal(signal.SIGTERM)
    mode = read_when_there(d.after)
    run, = list_runs(d.runs)
    assert run.status == "interrupted"
    assert int(Path(f"{d.after}.rc").read_text()) == 128 + signal.SIGTERM
    assert " icanon" in mode and " echo" in mode                 # the terminal is restored
