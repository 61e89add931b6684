"""TensorBoard event files from the run store: ``lsml-tui report RUN_DIR --format tensorboard``.

One event file per run, so ``tensorboard --logdir runs`` shows each run under its id beside
a user's other runs. It holds every column of the steps, val and clips tables, every number
of every sampled profile (memory, FLOPs, timing, per-layer statistics, system load, data
parallel, theory, sharpness, noise scale, averaged validation), the events as text, and the
config as hparams. Written with TensorBoard's own record writer and protos (the optional
extra ``lsml-tui[tensorboard]``; neither TensorFlow nor torch's SummaryWriter is needed), and
the store is read row by row in step order, so a long run is never held in memory at once.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.text.summary_v2 import text_pb
from tensorboard.summary.writer.record_writer import RecordWriter

from lsml_tui.trainer.store.reader import RunInfo, RunReader, open_run
from lsml_tui.trainer.store.schema import LIVE
from lsml_tui.tui.report.data import timeline_entry

SUFFIX = ".lsml-tui"        # marks the files we write: a re-export replaces ours, nobody else's
STEP_TAGS = {               # steps table column -> tag (the table's column order)
    "loss": "train/loss", "lr": "train/lr",
    "grad_norm": "grad_norm/pre_clip", "grad_norm_clipped": "grad_norm/post_clip",
    "clipped": "grad_norm/clipped", "examples_per_second": "train/examples_per_second",
}
CLIP_TAGS = {"threshold": "grad_norm/clip_threshold", "scale": "grad_norm/clip_scale"}
# Sample kind -> (group, field -> tag). A field not named gets "<group>/<field>"; a dict field's
# numbers go under its tag ("timing/phase_seconds/forward"); a kind not listed keeps its name
# as the group, so a profile added later is exported too.
SAMPLES = {
    "FlopTable": ("flops", {"forward": "flops/forward_per_step",
                            "backward": "flops/backward_per_step",
                            "per_module": "flops_per_module"}),
    "LayerStats": ("layers", {"grad_norms": "layer_grad_norm",
                              "update_ratios": "layer_update_ratio",
                              "saved_bytes": "saved_activation_bytes"}),
    "MemorySample": ("memory", {}),
    "TimingSample": ("timing", {"phases": "timing/phase_seconds",
                                "flops_per_second": "flops/achieved_per_second",
                                "mfu": "flops/mfu"}),
    "SystemSample": ("system", {"sample": "system"}),
    "DistSample": ("distributed", {}),
    "TheoryInfo": ("theory/predicted", {}),
    "TheorySample": ("theory", {}),
    "SharpnessSample": ("sharpness", {"sharpness": "sharpness/value"}),
    "NoiseSample": ("noise_scale", {"noise_scale": "noise_scale/value"}),
    "AveragedVal": ("val", {"val_loss": "val/loss_averaged"}),
    "Logged": ("logged", {"values": "logged"}),        # a watched script's own run.log values
}
# Labels, not measurements: the step (the event's own), a sample's clock, ids, shapes, names.
NOT_SCALARS = {"step", "time", "rank", "index", "pid", "input_shape", "names"}
STATUS = {"finished": api_pb2.STATUS_SUCCESS, "diverged": api_pb2.STATUS_FAILURE,
          "failed": api_pb2.STATUS_FAILURE, "killed": api_pb2.STATUS_FAILURE,
          "interrupted": api_pb2.STATUS_UNKNOWN}


def _leaves(tag: str, value) -> Iterator[tuple[str, float]]:
    """(tag, number) for a number, or for every number inside a dict or a list of dicts (an
    item is labelled by its rank or GPU index). None (not measured) and text are left out."""
    if isinstance(value, (bool, int, float)):
        yield tag, float(value)
    elif isinstance(value, dict):
        for key, v in value.items():
            if key not in NOT_SCALARS:
                yield from _leaves(f"{tag}/{key}", v)
    elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            yield from _leaves(f"{tag}/{v.get('rank', v.get('index', i))}", v)


def sample_scalars(kind: str, payload: dict) -> Iterator[tuple[str, float]]:
    """(tag, value) for every number in one stored sample."""
    if kind == "LayerStats":            # parallel lists: parameter names and their values
        names = payload["names"]
        payload = {**payload, "grad_norms": dict(zip(names, payload["grad_norms"])),
                   "update_ratios": dict(zip(names, payload["update_ratios"]))}
    elif kind == "FlopTable":           # module -> [forward, backward]
        payload = {**payload, "per_module": {m: {"forward": f, "backward": b}
                                             for m, (f, b) in payload["per_module"].items()}}
    group, tags = SAMPLES.get(kind, (kind, {}))
    for field, value in payload.items():
        if field not in NOT_SCALARS:
            yield from _leaves(tags.get(field, f"{group}/{field}"), value)


def _points(reader: RunReader) -> Iterator[tuple[int, float | None, list]]:
    """(step, wall time or None, [(tag, value) or summary value]) from every table, merged in
    step order; on one step the steps row comes first (its time is the step's wall time)."""
    def steps():
        for step, t, *row in reader.iter_rows("steps"):
            yield step, t, [(tag, v) for tag, v in zip(STEP_TAGS.values(), row) if v is not None]

    def val():
        for step, t, loss in reader.iter_rows("val"):
            yield step, t, [] if loss is None else [("val/loss", loss)]

    def clips():
        for step, _, threshold, scale in reader.iter_rows("clips"):   # norm: grad_norm/pre_clip
            yield step, None, [(CLIP_TAGS["threshold"], threshold), (CLIP_TAGS["scale"], scale)]

    def samples():
        for step, kind, payload in reader.iter_rows("samples"):
            yield step, None, list(sample_scalars(kind, payload))

    def events():
        entries = sorted((timeline_entry(e) for e in reader.events()), key=lambda e: e["step"])
        for step, group in itertools.groupby(entries, key=lambda e: e["step"]):
            lines = "\n".join(f"- **{e['kind']}**: {e['text']}" for e in group)
            yield step, None, list(text_pb("events", lines).value)

    return heapq.merge(steps(), val(), clips(), samples(), events(), key=lambda p: p[0])


def _value(tag_or_value) -> summary_pb2.Summary.Value:
    if isinstance(tag_or_value, summary_pb2.Summary.Value):
        return tag_or_value
    tag, v = tag_or_value
    return summary_pb2.Summary.Value(tag=tag, simple_value=v)


def hparams(config: dict) -> dict:
    """The config as hparams: numbers, bools and strings as they are, lists and tables as
    JSON; an option left unset (None) is left out, so its column stays numeric."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
            for k, v in config.items() if v is not None}


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)])


def _session_start(info: RunInfo) -> summary_pb2.Summary:
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=info.created)
    for name, v in hparams(info.config).items():
        if isinstance(v, bool):         # before int: a bool is an int
            start.hparams[name].bool_value = v
        elif isinstance(v, (int, float)):
            start.hparams[name].number_value = v
        else:
            start.hparams[name].string_value = v
    return _hparams_summary(metadata.SESSION_START_INFO_TAG,
                            plugin_data_pb2.HParamsPluginData(session_start_info=start))


def _session_end(info: RunInfo) -> summary_pb2.Summary:
    end = plugin_data_pb2.SessionEndInfo(status=STATUS.get(info.status, api_pb2.STATUS_UNKNOWN),
                                         end_time_secs=info.ended or info.created)
    return _hparams_summary(metadata.SESSION_END_INFO_TAG,
                            plugin_data_pb2.HParamsPluginData(session_end_info=end))


def events(reader: RunReader) -> Iterator[event_pb2.Event]:
    """The run as TensorBoard events: the file header, the config as hparams (a session start),
    one event per recorded step with every value of that step, and the session's end."""
    info = reader.info()
    yield event_pb2.Event(wall_time=info.created, file_version="brain.Event:2")
    # Session start and end only, no experiment summary: TensorBoard then builds the hparams
    # table from every run's sessions, so these runs and a user's others share one table.
    yield event_pb2.Event(wall_time=info.created, step=0, summary=_session_start(info))
    wall, step = info.created, 0
    for step, points in itertools.groupby(_points(reader), key=lambda p: p[0]):
        points = list(points)
        wall = next((t for _, t, _ in points if t is not None), wall)  # else the last step's
        values = [_value(v) for _, _, vs in points for v in vs]
        if values:
            yield event_pb2.Event(wall_time=wall, step=step,
                                  summary=summary_pb2.Summary(value=values))
    if info.status not in LIVE:         # a run still going: its session stays open
        yield event_pb2.Event(wall_time=info.ended or wall, step=step, summary=_session_end(info))


def write_tensorboard(run_dir, out_dir=None) -> Path:
    """Write one run's event file into its run directory, or into ``out_dir/<run id>/``; a
    previous export's file there is replaced. Return the path written."""
    with open_run(run_dir) as reader:
        run_id = reader.info().id
        out = Path(run_dir) if out_dir is None else Path(out_dir) / run_id
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"events.out.tfevents.{int(time.time()):010d}{SUFFIX}"
        # The temporary name has no "tfevents" in it: a TensorBoard watching the folder
        # never reads a half-written file.
        tmp = out / f".lsml-tui-export.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                writer = RecordWriter(f)
                for event in events(reader):
                    writer.write(event.SerializeToString())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    for old in out.glob(f"events.out.tfevents.*{SUFFIX}"):     # the previous export's
        if old != path:
            old.unlink(missing_ok=True)
    return path
