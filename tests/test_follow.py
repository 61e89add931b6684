"""lsml-tui open on a run that is still going: the dashboard follows it through the store and
its controls command it there (the run was started headless, on two ranks)."""

import asyncio
import signal
import subprocess
import sys
import time

import psutil

from lsml_tui.trainer.store.reader import list_runs, open_run
from lsml_tui.tui.app import LsmlApp
from lsml_tui.tui.panels import DistributedPanel, LossPanel

from tests.test_dashboard import status, type_value, until
from tests.test_distributed import descendants, none_alive


def test_open_follows_a_live_headless_run_and_commands_it_through_the_store(tmp_path):
    runs = tmp_path / "runs"
    proc = psutil.Popen([sys.executable, "-m", "lsml_tui.tui.cli", "--headless", "--no-progress",
                         "--model", "mlp", "--layers", "1", "--width", "16", "--device", "cpu",
                         "--workers", "2", "--sample-every", "10", "--steps", "1000000",
                         "--runs-dir", str(runs)], stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
    family = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (list(runs.glob("*/run.sqlite"))
                                               and list_runs(runs)[0].steps > 20):
            family = descendants(proc) or family
            time.sleep(0.2)
        run_dir = list_runs(runs)[0].run_dir

        async def main():
            app = LsmlApp.follow(run_dir)
            async with app.run_test(size=(140, 42)) as pilot:
                await until(pilot, lambda: status(app)["step"] > 20, what="steps from the store")
                await until(pilot, lambda: app.query_one(DistributedPanel).latest is not None,
                            what="a per-rank sample")
                assert len(app.query_one(DistributedPanel).latest.ranks) == 2
                await pilot.press("space")                       # through the commands table
                await until(pilot, lambda: status(app)["status"] == "paused", what="paused")
                await type_value(pilot, app, "l", "0.0042")
                await until(pilot, lambda: any("lr 0.0042" in m for _, m in
                                               app.query_one(LossPanel).markers), what="lr")
                await pilot.press("space")
                await until(pilot, lambda: status(app)["status"] == "training", what="resumed")
                await pilot.press("q")                           # leaves the run going
        asyncio.run(main())
        steps_then = list_runs(runs)[0].steps
        time.sleep(2.0)
        assert proc.poll() is None and list_runs(runs)[0].steps > steps_then   # still training
        family = descendants(proc) or family
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        assert none_alive(family), "a rank was left behind"
    run, = list_runs(runs)
    assert run.status == "interrupted"
    with open_run(run.run_dir) as r:
        applied = [(e["command"], e["step"]) for e in r.events("CommandApplied")]
    names = [c for c, _ in applied]
    assert names[:3] == ["pause", "lr 0.0042", "resume"] and names[-1] == "stop"
    assert applied[0][1] == applied[1][1]            # the lr was set while paused, same step
