"""Measurements of what training costs. Each profiler returns plain data and
imports neither the trainer nor the UI."""
