"""The run's optional panels (data or model parallel, theory, sharpness, noise scale) as tabs
in the FLOPs panel's cell, FLOPs the last tab: each panel gets a whole cell of the grid, so
that its plot stays readable on a 120x40 terminal (stacked in the side column, each got a row
or two below about 50 rows). ``p`` shows the next tab.

With no optional panel the cell is the FLOPs panel, as it always was.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import TabbedContent, TabPane

from lsml_tui.tui.panels.distributed import DistributedPanel
from lsml_tui.tui.panels.flops import FlopsPanel
from lsml_tui.tui.panels.noise import NoiseScalePanel
from lsml_tui.tui.panels.sharpness import SharpnessPanel
from lsml_tui.tui.panels.theory import TheoryPanel


def optional_panels(cfg) -> list[tuple[str, object]]:
    """(tab label, panel) for each optional panel this run shows."""
    out = []
    if cfg.workers > 1:
        split = getattr(cfg, "parallel", "ddp") not in ("ddp", "zero1")  # fsdp, tp, pp
        out.append(("Parallel" if split else "DDP", DistributedPanel(cfg)))
    if cfg.model == "linear":
        out.append(("Theory", TheoryPanel()))
    if cfg.sharpness_every is not None:
        out.append(("Sharpness", SharpnessPanel(cfg.sharpness_every, cfg.optimizer)))
    if cfg.noise_scale_every is not None:
        out.append(("Noise", NoiseScalePanel(cfg.noise_scale_every)))
    return out


def flops_cell(cfg) -> ComposeResult:
    """The FLOPs panel, or the optional panels and it as tabs (inside the app's compose)."""
    optional = optional_panels(cfg)
    if not optional:
        yield FlopsPanel()
        return
    with TabbedContent(id="tabs"):
        for label, panel in optional + [("FLOPs", FlopsPanel())]:
            with TabPane(label, id=f"tab-{label.lower()}"):
                yield panel
