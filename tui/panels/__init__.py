"""One widget per panel. Each takes events with ``add`` and draws on ``redraw``
(called by the app's timer, a few times a second, only when something changed).

May import textual, plotext, ``lsml_tui.trainer``'s torch-free modules (events,
commands), torch-free ``lsml_tui.profilers`` helpers and ``lsml_tui.tui.series`` and
``format``; never the app.
"""

from lsml_tui.tui.panels.distributed import DistributedPanel
from lsml_tui.tui.panels.events import EventsPanel
from lsml_tui.tui.panels.flops import FlopsPanel
from lsml_tui.tui.panels.gradients import GradientsPanel
from lsml_tui.tui.panels.loss import LossPanel
from lsml_tui.tui.panels.memory import MemoryPanel
from lsml_tui.tui.panels.noise import NoiseScalePanel
from lsml_tui.tui.panels.sharpness import SharpnessPanel
from lsml_tui.tui.panels.status import StatusLine
from lsml_tui.tui.panels.system import SystemPanel
from lsml_tui.tui.panels.theory import TheoryPanel

__all__ = ["DistributedPanel", "EventsPanel", "FlopsPanel", "GradientsPanel", "LossPanel", "MemoryPanel",
           "NoiseScalePanel", "SharpnessPanel", "StatusLine", "SystemPanel", "TheoryPanel"]
