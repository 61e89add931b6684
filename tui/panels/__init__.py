"""One widget per panel. Each takes events with ``add`` and draws on ``redraw``
(called by the app's timer, a few times a second, only when something changed)."""

from .distributed import DistributedPanel
from .events import EventsPanel
from .flops import FlopsPanel
from .gradients import GradientsPanel
from .loss import LossPanel
from .memory import MemoryPanel
from .noise import NoiseScalePanel
from .sharpness import SharpnessPanel
from .status import StatusLine
from .system import SystemPanel
from .theory import TheoryPanel

__all__ = ["DistributedPanel", "EventsPanel", "FlopsPanel", "GradientsPanel", "LossPanel", "MemoryPanel",
           "NoiseScalePanel", "SharpnessPanel", "StatusLine", "SystemPanel", "TheoryPanel"]
