"""More than one process: who this rank is and the one-process case (``world``), data
parallel with DDP and the per-step exchange of commands and timings (``ddp``), DDP's
communication hooks (``hooks``), what the ranks measured turned into samples and the
summary (``measure``), the model-parallel modes (``sharded`` for what fsdp and tp share,
``fsdp``, ``tp``, ``pipeline``), which mode --parallel runs (``modes``), and the elastic
launcher with each rank's body (``launch``).

May import ``lsml_tui.profilers``, the trainer's config, events, device, guard, store and
loop (``launch`` starts a Trainer); the loop imports only ``world`` from here.
"""
