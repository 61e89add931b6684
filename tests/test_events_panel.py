"""The events panel: sustained clipping is one line updated in place, not a wall of lines."""

import asyncio

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.events import ClipEvent, CommandApplied, RunStarted, StepMetrics
from lsml_tui.tui.app import LsmlApp
from lsml_tui.tui.bridge import ReplayBridge
from lsml_tui.tui.follow import ScriptOutput
from lsml_tui.tui.panels import EventsPanel
from lsml_tui.tui.panels.output import OutputPanel
from lsml_tui.tui.panels.events import QUIET, WINDOW, ClipSpell


def steps(first, last, clips=lambda s: False):
    """Step metrics from `first` to `last`; a clip event (norm 2 + step/1000) where `clips`."""
    out = []
    for s in range(first, last + 1):
        out.append(StepMetrics(s, 1.0, 1e-3, 2 + s / 1000, clips(s), 1e4, s / 1e4))
        if clips(s):
            out.append(ClipEvent(s, 2 + s / 1000, 1.0, 1.0 / (2 + s / 1000)))
    return out


def every_other_step_from_100_to_598(s):
    return 100 <= s <= 598 and s % 2 == 0


def test_a_spell_starts_once_stops_once_and_reports_its_share():
    spell, lines = ClipSpell(), []
    for e in steps(0, 1100, every_other_step_from_100_to_598):
        if isinstance(e, ClipEvent):
            lines += spell.clip(e.step, e.grad_norm, e.threshold)
        else:
            lines.append(spell.see(e.step))
        if e.step == 598 and isinstance(e, ClipEvent):
            # clips at 100, 102, ..., 598: (598 - 100) / 2 + 1 = 250 of the last 500 steps
            assert spell.summary() == f"clipped 50% of last {WINDOW} steps, norm ≤2.6"
    lines = [line for line in lines if line]
    assert lines == ["step 100: clipping started (norm 2.1 > 1)",
                     f"step {598 + QUIET}: clipping stopped (250 clipped since step 100; "
                     f"none in the last {QUIET} steps)"]
    assert spell.summary() == ""            # the window is steps 601-1100: the last clip (598) left it


def test_a_gap_hidden_by_thinning_still_ends_the_old_spell():
    spell = ClipSpell()
    spell.clip(10, 3.0, 1.0)
    lines = spell.clip(10 + QUIET + 5, 3.0, 1.0)     # no step metrics in between reached us
    assert [line.split(":")[1].strip().split(" (")[0] for line in lines] == [
        "clipping stopped", "clipping started"]


def test_the_dashboard_shows_sustained_clipping_in_place(tmp_path):
    cfg = resolve(RunConfig(model="mlp", runs_dir=str(tmp_path / "runs")))

    class Scripted(ReplayBridge):
        """Hands the app whatever the test puts in `feed` on the next tick."""
        feed: list = []

        def more(self):
            out, Scripted.feed[:] = list(Scripted.feed), []
            return out

    async def main():
        app = LsmlApp(cfg, bridge_factory=Scripted)
        async with app.run_test(size=(140, 42)) as pilot:
            panel = app.query_one(EventsPanel)
            Scripted.feed += [RunStarted(0, "r", "", {}, 0, "cpu"),
                              *steps(0, 598, every_other_step_from_100_to_598),
                              CommandApplied(599, "lr 0.01", "lr 0.001 -> 0.01")]
            await pilot.pause(1.2)                  # two ticks of the 2 Hz timer
            assert panel.border_subtitle == f"clipped 50% of last {WINDOW} steps, norm ≤2.6"
            Scripted.feed += steps(599, 1100, every_other_step_from_100_to_598)
            await pilot.pause(1.2)
            assert panel.border_subtitle == ""      # no clip in steps 601-1100
            lines = list(panel.history)
        clip_lines = [line for line in lines if "clip" in line]
        assert clip_lines == ["step 100: clipping started (norm 2.1 > 1)",
                              f"step {598 + QUIET}: clipping stopped (250 clipped since step "
                              f"100; none in the last {QUIET} steps)"]
        assert "step 599: lr 0.001 -> 0.01" in lines        # the switch is not drowned out
    asyncio.run(main())


def test_long_event_lines_wrap_inside_the_panel_at_any_width(tmp_path):
    """Every word of every line is on screen: a line longer than the panel wraps at the
    panel's width (RichLog's own default wraps at 78 columns and the border cuts the rest),
    and a terminal made wider or narrower wraps the lines again."""
    cfg = resolve(RunConfig(model="mlp", runs_dir=str(tmp_path / "runs")))
    events = [RunStarted(0, "20260101-000000-mlp-abcd", "runs/x", {}, 1234, "cpu", "fp32"),
              CommandApplied(200, "optimizer adamw", "optimizer adam -> adamw (lr 0.003); "
                             "carried step, exp_avg, exp_avg_sq from adam", {})]

    def shown(panel) -> list[str]:
        return [panel.render_line(y).text.rstrip() for y in range(panel.size.height)]

    async def main():
        app = LsmlApp(cfg, bridge_factory=lambda c: ReplayBridge(c, events))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(1.2)
            panel = app.query_one(EventsPanel)
            out = []
            for width in (160, 120, 100):   # wider, then narrower again
                await pilot.resize_terminal(width, 40)
                await pilot.pause(0.3)
                out.append((panel.scrollable_content_region.width, panel.virtual_size.width,
                            shown(panel), list(panel.history)))
            return out

    for inside, widest, lines, said in asyncio.run(main()):
        assert widest <= inside                 # nothing to scroll sideways to
        assert len(said[1]) > inside            # the run's line is longer than the panel
        # the words on screen, in order, are the words said: none cut at the border
        assert " ".join(" ".join(lines).split()) == " ".join(" ".join(said).split())


def test_a_scripts_long_output_line_wraps_inside_its_panel(tmp_path):
    """lsml-tui run's output panel is a RichLog too: a long print wraps, none of it cut."""
    cfg = resolve(RunConfig(model="mlp", runs_dir=str(tmp_path / "runs")))
    said = "epoch 3: " + " ".join(f"loss[{k}]=0.{k}23" for k in range(12))
    assert len(said) == 9 + 10 * 13 + 2 * 15 + 11     # "epoch 3: ", the 12 values, spaces

    async def main():
        app = LsmlApp(cfg, bridge_factory=lambda c: ReplayBridge(c, [ScriptOutput(said)]))
        app.script = "train.py"
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(1.2)
            panel = app.query_one(OutputPanel)
            lines = [panel.render_line(y).text for y in range(panel.size.height)]
            return panel.scrollable_content_region.width, panel.virtual_size.width, lines

    inside, widest, lines = asyncio.run(main())
    assert len(said) > inside and widest <= inside
    assert " ".join(" ".join(lines).split()) == said
