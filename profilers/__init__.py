"""Measurements of what training costs: FLOPs, saved activations and memory, gradients,
timing, system load, peaks, traces, communication, theory's rates, sharpness and the
noise scale. Each returns plain data and knows nothing of the store, the events or the
screen.

May import torch, psutil, pynvml and the standard library; never ``lsml_tui.trainer`` or
``lsml_tui.tui``.
"""
