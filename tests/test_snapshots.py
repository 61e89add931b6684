"""How the dashboard looks: SVG snapshots of the main and help screens on a fixed run.

The run is scripted (a fixed event stream, no trainer), so the screen is the
same on every machine. Update after an intended change of look with
``pytest tests/test_snapshots.py --snapshot-update`` and review the SVGs.
"""

import math

import pytest
import textual

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.events import (ClipEvent, CommandApplied, FlopTable, LayerStats,
                                     MemorySample, RunStarted, StepMetrics, SystemSample,
                                     TimingSample, ValMetrics)
from lsml_tui.tui.app import LsmlApp
from lsml_tui.tui.bridge import ReplayBridge

# Snapshots are pixel-exact to the Textual release that drew them.
RECORDED_WITH = "8.2"
pytestmark = pytest.mark.skipif(not textual.__version__.startswith(RECORDED_WITH),
                                reason=f"snapshots were recorded with Textual {RECORDED_WITH}.x")


def scripted_events() -> list:
    names = ["blocks.0.fc.weight", "blocks.0.fc.bias", "head.weight", "head.bias"]
    events = [RunStarted(0, "20260101-000000-mlp-abcd", "runs/20260101-000000-mlp-abcd", {},
                         1234, "cpu", "bf16")]
    for step in range(400):
        loss = 2.3 * math.exp(-step / 120) + 0.3 + 0.05 * math.sin(step / 7)
        norm = 0.5 + 1.5 * math.exp(-step / 80)
        events.append(StepMetrics(step, loss, 3e-3, norm, norm > 1.0, 6400.0, 1000.0 + step / 50))
        if norm > 1.0:
            events.append(ClipEvent(step, norm, 1.0, 1.0 / (norm + 1e-6)))
        if step % 100 == 99:
            events.append(ValMetrics(step, loss + 0.1))
    events += [
        CommandApplied(200, "optimizer adamw", "optimizer adam -> adamw (lr 0.003); carried "
                       "step, exp_avg, exp_avg_sq from adam", {"optimizer": "adamw"}),
        FlopTable(0, 172032, 303104, {"blocks.0.fc": [131072, 131072], "head": [40960, 81920]},
                  [128, 32]),
        LayerStats(300, names, [0.2, 0.05, 0.4, 0.1], [1e-3, 2e-3, 1e-3, 5e-4],
                   {"blocks.0.fc": 16384, "blocks.0.act": 8192, "(loss)": 6148}),
        MemorySample(300, 2728, 2728, 5472, 30724, None),
        TimingSample(300, {"data": 0.0001, "forward": 0.0003, "backward": 0.0004,
                           "optimizer": 0.0002}, 0.001, 4.75e8, 0.0026),
        SystemSample(300, {"cpu_percent": 55.0, "process_cpu_percent": 98.0, "rss_bytes": 3.1e8,
                           "ram_used_percent": 4.0, "gpus": []}),
    ]
    return events


def app(tmp_path) -> LsmlApp:
    cfg = resolve(RunConfig(model="mlp", layers=1, width=16, runs_dir=str(tmp_path)))
    return LsmlApp(cfg, bridge_factory=lambda c: ReplayBridge(c, scripted_events()))


def test_main_screen(snap_compare, tmp_path):
    assert snap_compare(app(tmp_path), terminal_size=(140, 42), press=["_"])


def test_help_screen(snap_compare, tmp_path):
    assert snap_compare(app(tmp_path), terminal_size=(140, 42), press=["question_mark", "_"])
