"""The data-parallel panel on a scripted sample: per-rank bars, the straggler, the formulas."""

import asyncio

import pytest

from lsml_tui.profilers import comm
from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.events import DistSample, RunStarted
from lsml_tui.tui.app import LsmlApp
from lsml_tui.tui.bridge import ReplayBridge
from lsml_tui.tui.panels import DistributedPanel, StatusLine
from lsml_tui.tui.panels.distributed import BAR


def sample(sync="ps"):
    rows = [dict.fromkeys(comm.FIELDS, 0.0) for _ in range(2)]
    rows[0].update(compute_s=0.010, exposed_s=0.060, step_s=0.075)   # waits 50 ms for rank 1
    rows[1].update(compute_s=0.060, exposed_s=0.012, step_s=0.074, delay_s=0.05)
    ranks = comm.ranks_breakdown(rows)
    m = 2792.0                                      # 698 float32 gradients
    wire = comm.wire_bytes(sync, m, 2)
    return DistSample(50, 2, sync, ranks, slowest=1, spread_s=0.001, predicted_step_s=0.06,
                      payload_bytes=m, wire_bytes_per_rank=wire["per_rank"],
                      busiest_link_bytes=wire["busiest_link"],
                      **comm.bandwidth(sync, m, 0.012, 2), noise_scale=812.0,
                      global_batch=256, replicas_agree=True)


def test_the_panel_shows_each_rank_the_straggler_and_the_parameter_server_link(tmp_path):
    cfg = resolve(RunConfig(model="mlp", workers=2, sync="ps", runs_dir=str(tmp_path)))
    events = [RunStarted(0, "r", "", {}, 0, "cpu"), sample()]

    async def main():
        app = LsmlApp(cfg, bridge_factory=lambda c: ReplayBridge(c, events))
        async with app.run_test(size=(140, 42)) as pilot:
            await pilot.pause(1.2)
            panel = app.query_one(DistributedPanel)
            text = str(panel.render())
            status = str(app.query_one(StatusLine).render())
        lines = text.splitlines()
        fast, slow = lines[0], lines[1]
        # rank 0: compute 10 ms, wait 60 - 10 = 50 ms, comm 60 - 50 = 10 ms; the longest bar
        # is rank 1's 60 + 12 = 72 ms: round(24 * 10/72) = 3 compute, round(24 * 50/72) = 17 wait
        assert fast.count("█") == round(BAR * 10 / 72) and fast.count("░") == round(BAR * 50 / 72)
        assert slow.count("█") == round(BAR * 60 / 72) and slow.count("░") == 0
        assert "slowest" in slow and "slowest" not in fast
        assert "parameter server 2(N-1)·M through rank 0: 5.45 KiB" in text    # 2 * 2792 B
        assert "predicted 60 ms" in text and "noise scale 812 vs global batch 256" in text
        assert "x2 ps" in status
    asyncio.run(main())


def test_a_single_process_run_has_no_data_parallel_panel(tmp_path):
    cfg = resolve(RunConfig(model="mlp", runs_dir=str(tmp_path)))

    async def main():
        app = LsmlApp(cfg, bridge_factory=lambda c: ReplayBridge(c, []))
        async with app.run_test(size=(140, 42)):
            assert not app.query(DistributedPanel)
    asyncio.run(main())


def test_a_watched_ddp_scripts_panel_shows_data_forward_wait_and_the_rest():
    from lsml_tui.tui.panels.distributed import render
    # rank 1's data and forward take 60 ms, rank 0's 10 ms: rank 0 waits 50 ms for it; both
    # steps take 75 ms, so the rest (backward, all-reduce, update) is 75 - 60 = 15 ms each
    ranks = [{"rank": 0, "compute_s": 0.010, "wait_s": 0.050, "comm_s": 0.015, "step_s": 0.075},
             {"rank": 1, "compute_s": 0.060, "wait_s": 0.0, "comm_s": 0.015, "step_s": 0.075}]
    s = DistSample(99, 2, "watch", ranks, slowest=1, spread_s=0.0, predicted_step_s=None,
                   payload_bytes=None, wire_bytes_per_rank=None, busiest_link_bytes=None,
                   algbw=None, busbw=None, noise_scale=None, global_batch=16,
                   replicas_agree=True)
    text = render(s).plain
    fast, slow = text.splitlines()[:2]
    # the longest bar is 75 ms: round(24 * 10/75) = 3 data+forward, round(24 * 50/75) = 16 wait
    assert fast.count("█") == round(BAR * 10 / 75) and fast.count("░") == round(BAR * 50 / 75)
    assert slow.count("█") == round(BAR * 60 / 75) and "slowest" in slow
    assert "█ data+forward ▓ backward, all-reduce, update ░ wait" in text
    assert "global batch 16" in text and "M " not in text and "algbw" not in text


def test_a_pipeline_panel_shows_what_each_rank_holds_sends_and_idles_beside_the_formulas():
    from lsml_tui.tui.panels.distributed import render
    rows = [dict.fromkeys(comm.FIELDS, 0.0) for _ in range(2)]
    # each stage computes 80 ms of a pipeline whose longest span is 100 ms: 1 - 80/100 = 20%
    rows[0].update(compute_s=0.080, exposed_s=0.020, step_s=0.1, pipeline_s=0.100,
                   param_bytes=2112, grad_bytes=2112, optimizer_state_bytes=4232,
                   send_recv_bytes=8192.0, send_recv_s=0.003)
    rows[1].update(compute_s=0.080, exposed_s=0.010, step_s=0.1, pipeline_s=0.090,
                   param_bytes=1768, grad_bytes=1768, optimizer_state_bytes=3552,
                   send_recv_bytes=8192.0, send_recv_s=0.001)
    ranks = comm.ranks_breakdown(rows)
    assert [r["bubble_fraction"] for r in ranks] == [pytest.approx(0.2)] * 2
    s = DistSample(9, 2, "allreduce", ranks, slowest=0, spread_s=0.0, predicted_step_s=None,
                   payload_bytes=0, wire_bytes_per_rank=None, busiest_link_bytes=None,
                   algbw=None, busbw=None, noise_scale=None, global_batch=128,
                   replicas_agree=None, parallel="pp", param_predicted=(2112 + 1768) / 2,
                   grad_predicted=(2112 + 1768) / 2, optimizer_state_predicted=3892,
                   bubble_predicted=1 / 5, comm_predicted=[8192, 8192])
    text = render(s).plain
    assert "r0 params 2.06 KiB grads 2.06 KiB opt 4.13 KiB" in text       # 2112 B, 4232 B
    assert "formula pp: params 1.89 KiB grads 1.89 KiB opt 3.8 KiB" in text   # 1940, 3892 B
    assert "r1 sent 8 KiB (formula 8 KiB): send-recv 8 KiB 1 ms" in text    # 0.001 s in calls
    # m = 4 microbatches on p = 2 stages: (2-1)/(4+2-1) = 20%
    assert "bubble r0 20%  r1 20% vs (p-1)/(m+p-1) = 20%" in text
    assert "replicas differ" not in text and "noise scale" not in text
