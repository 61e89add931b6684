"""More than one process: who this rank is and the one-process case (``world``), data
parallel with DDP and the per-step exchange of commands and timings (``ddp``), DDP's
communication hooks (``hooks``), and the elastic launcher with each rank's body
(``launch``).

May import ``lsml_tui.profilers``, the trainer's config, events, device, store and
loop (``launch`` starts a Trainer); the loop imports only ``world`` from here.
"""
