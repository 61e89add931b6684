"""``lsml-tui run script.py``: the user's own script as the trainer process, headless and
under the dashboard (Pilot and a real terminal), and the examples as users run them."""

import asyncio
import shutil
import subprocess
import sys
import time
import textwrap
from pathlib import Path

import psutil
import pytest

from lsml_tui.trainer.store.reader import list_runs, open_run
from lsml_tui.tui.app import LsmlApp
from lsml_tui.tui.panels import StatusLine
from lsml_tui.tui.panels.output import OutputPanel
from lsml_tui.tui.runner import start, wait_for_run
from tests.conftest import alive, run_cli
from tests.test_dashboard import until
from tests.test_e2e_tmux import quit_and_wait, step_on, tmux, wait_for

ROOT = Path(__file__).resolve().parent.parent
PLAIN = ROOT / "examples" / "plain.py"


def script(tmp_path, steps: int, sleep: float = 0.0) -> Path:
    """A small watched loop that prints a line every 10 steps."""
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(f"""
        import time, torch, lsml_tui
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        run = lsml_tui.watch(model, opt, sample_every=20)
        for step in range({steps}):
            x = torch.randn(16, 4)
            loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
            run.log(loss=loss)
            if step % 10 == 0:
                print(f"step {{step}} loss {{loss.item():.3f}}")
            if run.should_stop:
                break
            time.sleep({sleep})
    """))
    return path


def test_headless_runs_the_script_to_its_end_with_its_output_kept(tmp_path):
    runs = tmp_path / "runs"
    proc = run_cli("run", "--headless", "--runs-dir", str(runs), str(script(tmp_path, 30)),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (info,) = list_runs(runs)
    assert (info.status, info.steps) == ("finished", 30)
    output = (Path(info.run_dir) / "output.log").read_text()
    assert [line.split()[1] for line in output.splitlines()] == ["0", "10", "20"]
    assert "train.py finished: 30 steps" in proc.stderr


def test_bad_input_is_refused_before_the_script_starts(tmp_path):
    missing = run_cli("run", "--headless", "--runs-dir", str(tmp_path / "r"),
                      str(tmp_path / "nope.py"))
    assert missing.returncode == 2 and "'" + str(tmp_path / "nope.py") + "' is not a readable" \
        in missing.stderr and not (tmp_path / "r").exists()
    blocked = tmp_path / "file"
    blocked.write_text("")
    runs = run_cli("run", "--headless", "--runs-dir", str(blocked / "r"), str(PLAIN))
    assert runs.returncode == 2 and "--runs-dir" in runs.stderr
    plain = tmp_path / "plain.py"
    plain.write_text("print('no watch here')\n")
    unwatched = run_cli("run", "--headless", "--runs-dir", str(tmp_path / "r"), str(plain))
    assert unwatched.returncode == 1
    assert "before it called lsml_tui.watch" in unwatched.stderr and "no watch here" in \
        unwatched.stderr


def test_the_dashboard_follows_commands_and_stops_a_script(tmp_path):
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    popen = start(script(tmp_path, 100_000, sleep=0.01), [], run_dir, own_session=True)

    async def body(app, pilot):
        state = lambda: app.query_one(StatusLine).state   # noqa: E731
        await until(pilot, lambda: state()["step"] > 20, what="steps from the script")
        await until(pilot, lambda: app.query_one(OutputPanel).lines, what="its output")
        assert app.check_action("pick_optimizer", ()) is None   # shown as unavailable
        await pilot.press("space")
        await until(pilot, lambda: state()["status"] == "paused", what="the script to pause")
        await pilot.press("l", "ctrl+u", *"0.2", "enter", "space")
        await until(pilot, lambda: state()["lr"] == pytest.approx(0.2), what="the new lr")
        await pilot.press("q")

    async def main():
        app = LsmlApp.run_script(run_dir, popen, "train.py")
        async with app.run_test(size=(140, 45)) as pilot:
            await body(app, pilot)

    try:
        assert wait_for_run(run_dir, popen)
        asyncio.run(main())
        popen.wait(30)                      # q ended the script
    finally:
        if popen.poll() is None:
            popen.kill()
    with open_run(run_dir) as r:
        info, steps = r.info(), r.steps()
    assert info.status == "interrupted"
    first = steps["lr"].index(pytest.approx(0.2))
    assert set(steps["lr"][:first]) == {0.05}            # the script's own lr until then


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_lsml_tui_run_the_plain_example_in_tmux(tmp_path):
    session = f"lsml-run-{tmp_path.name}"[:40]
    runs, done = tmp_path / "runs", tmp_path / "exited"
    # (COLUMNS and LINES may reach tmux's environment from the test process: the terminal's
    # own size must win)
    cmd = (f"cd {tmp_path} && env -u COLUMNS -u LINES {sys.executable} -m lsml_tui.tui.cli run "
           f"--runs-dir {runs} {PLAIN} --steps 1000000; touch {done}")
    tmux("new-session", "-d", "-s", session, "-x", "140", "-y", "45", cmd)
    try:
        wait_for(session, lambda t: step_on(t) > 150 and "Output of plain.py" in t
                 and "step 100: loss" in t and "FLOPs per step" in t and "fwd " in t,
                 "the example to train, its output and the panels to fill")
        tmux("send-keys", "-t", session, "l")
        wait_for(session, lambda t: "Learning rate" in t, "the lr dialog")
        time.sleep(0.5)                                     # the input takes the focus
        for keys in (["C-u"], ["-l", "0.0005"], ["Enter"]):
            tmux("send-keys", "-t", session, *keys)
            time.sleep(0.2)
        wait_for(session, lambda t: "lr 0.0005 " in t.splitlines()[0], "the new lr")
        quit_and_wait(session, done)
    finally:
        tmux("kill-session", "-t", session)
    (info,) = list_runs(runs)
    assert info.status == "interrupted" and info.steps > 150
    with open_run(info.run_dir) as r:
        lrs = r.steps()["lr"]
    assert lrs[-1] == pytest.approx(0.0005, rel=1e-3)    # (the script's cosine, barely moved)
    leftover = [p for p in psutil.process_iter(["cmdline"])
                if str(PLAIN) in " ".join(p.info["cmdline"] or [])]
    assert alive(leftover) == []


@pytest.mark.parametrize("example, steps, model", [
    ("plain.py", 30, "Sequential"), ("with_lightning.py", 30, "Classifier"),
    ("with_transformers.py", 10, "GPT2LMHeadModel")])
def test_the_examples_run_as_they_are(tmp_path, example, steps, model):
    proc = run_cli("run", "--headless", "--runs-dir", str(tmp_path / "runs"),
                   str(ROOT / "examples" / example), "--steps", str(steps), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (info,) = list_runs(tmp_path / "runs")
    assert (info.status, info.steps, info.model) == ("finished", steps, model)


def test_a_finished_watched_run_replays_with_its_unavailable_keys(tmp_path):
    import lsml_tui
    import torch
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with lsml_tui.watch(model, opt, runs_dir=tmp_path, sample_every=5) as run:
        for _ in range(12):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step(); run.log(loss=loss)

    async def main():
        app = LsmlApp.replay(run.run_dir)
        async with app.run_test(size=(140, 45)) as pilot:
            await until(pilot, lambda: app.bridge.ended and app.query_one(StatusLine).state[
                "step"] == 12, what="the replay")
            await pilot.press("o")                  # unavailable: nothing opens
            await pilot.pause(0.2)
            return app.watched, len(app.screen_stack), app.check_action("rewind", ())
    assert asyncio.run(main()) == (True, 1, None)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_closing_the_terminal_ends_the_script_with_its_run_recorded(tmp_path):
    session = f"lsml-hup-{tmp_path.name}"[:40]
    runs = tmp_path / "runs"
    cmd = (f"cd {tmp_path} && env -u COLUMNS -u LINES {sys.executable} -m lsml_tui.tui.cli run "
           f"--runs-dir {runs} {PLAIN} --steps 1000000")
    tmux("new-session", "-d", "-s", session, "-x", "140", "-y", "45", cmd)
    try:
        wait_for(session, lambda t: step_on(t) > 50, "the example to train")
        procs = [p for p in psutil.process_iter(["cmdline"])
                 if str(runs) in " ".join(p.info["cmdline"] or [])
                 or str(PLAIN) in " ".join(p.info["cmdline"] or [])]
        assert len(procs) >= 2                      # lsml-tui and the script
    finally:
        tmux("kill-session", "-t", session)
    psutil.wait_procs(procs, timeout=30)
    assert alive(procs) == []
    (info,) = list_runs(runs)
    assert info.status == "interrupted"


def test_a_killed_lsml_tui_leaves_no_script_running(tmp_path):
    """lsml-tui killed outright (SIGKILL: nothing of it runs any more): the script notices
    its parent is gone and ends as on SIGTERM, its run recorded interrupted."""
    runs = tmp_path / "runs"
    proc = psutil.Popen([sys.executable, "-m", "lsml_tui.tui.cli", "run", "--headless",
                         "--runs-dir", str(runs), str(script(tmp_path, 100_000, sleep=0.01))],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and not (list_runs(runs) if runs.exists() else []):
        time.sleep(0.2)
    children = proc.children(recursive=True)
    assert children, "the script did not start"
    time.sleep(1.0)                             # a few steps in
    proc.kill()
    proc.wait()
    psutil.wait_procs(children, timeout=30)
    assert alive(children) == []
    (info,) = list_runs(runs)
    assert info.status == "interrupted" and info.steps > 0
