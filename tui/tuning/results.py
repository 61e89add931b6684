"""The end of a sweep: the best trials as a table (or JSON), a comparison report of their
runs and Optuna's chart of the study, in ``runs/sweep-<study>/``."""

from __future__ import annotations

import io
import json
import math
import sys
import warnings
from pathlib import Path

from lsml_tui.trainer.tuning import space as SP
from lsml_tui.trainer.tuning.study import Sweep, storage


def finish(sweep: Sweep, top: int, formats: list[str], as_json: bool,
           interrupted: bool) -> int:
    import optuna
    study = optuna.load_study(study_name=sweep.study, storage=storage(sweep.storage))
    trials = study.trials
    best = sorted((t for t in trials if t.state.name == "COMPLETE"),
                  key=lambda t: (t.value, t.number))[:top]
    written = []
    if best and not interrupted:
        from lsml_tui.tui.report import write_reports
        out = Path(sweep.storage).parent
        dirs = [d for d in (run_dir(sweep, t) for t in best) if d.is_dir()]
        written = write_reports(dirs, formats, out) if dirs and formats else []
        chart = write_chart(study, [p.name for p in sweep.space], out)
        written += [chart] if chart else []
    if as_json:
        print(json.dumps({"study": sweep.study, "storage": sweep.storage, "metric": sweep.metric,
                          "trials": [row(t) for t in trials], "best": [t.number for t in best],
                          "written": [str(p) for p in written]}))
    else:
        print_table(trials, best, sweep)
        for path in written:
            print(path)
    if interrupted:
        return 130
    return 0 if best else 1


def run_dir(sweep: Sweep, trial) -> Path:
    """A trial's run: beside the study, wherever the runs dir has moved since."""
    return Path(sweep.storage).parent.parent / trial.user_attrs.get("run_id", "?")


def row(t) -> dict:
    value = t.value if t.value is None or math.isfinite(t.value) else None
    return {"number": t.number, "state": t.state.name.lower(), "value": value,
            "params": t.params, "status": t.user_attrs.get("status"),
            "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error")}


def print_table(trials, best, sweep: Sweep) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console(width=None if sys.stdout.isatty() else 200)   # piped: never cut an id
    states = [t.state.name for t in trials]
    counts = ", ".join(f"{states.count(s)} {word}" for s, word in
                       (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed"),
                        ("RUNNING", "running"), ("WAITING", "waiting")) if s in states)
    console.print(f"study {sweep.study}: {len(trials)} trial{'s' * (len(trials) != 1)}"
                  f"{f' ({counts})' if counts else ''}", highlight=False)
    if not best:
        console.print("no trial completed", highlight=False)
        return
    table = Table(box=None, header_style="bold")
    names = [p.name for p in sweep.space]
    for column in ("trial", sweep.metric, *names, "status", "run"):
        table.add_column(column, no_wrap=column == "run",
                         justify="right" if column in ("trial", sweep.metric) else "left")
    for t in best:
        table.add_row(str(t.number), "inf" if math.isinf(t.value) else f"{t.value:.4g}",
                      *(SP.show(t.params.get(n)) for n in names),
                      t.user_attrs.get("status", ""), t.user_attrs.get("run_id", ""))
    console.print(table)


def write_chart(study, names: list[str], out: Path) -> Path | None:
    """Optuna's parallel coordinates of the study (its slice plot for one parameter) as an SVG;
    None when no trial has a finite score."""
    import optuna

    from lsml_tui.trainer.store.schema import write_atomic
    if not any(t.state.name == "COMPLETE" and math.isfinite(t.value) for t in study.trials):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ov
    with warnings.catch_warnings(), matplotlib.rc_context({"svg.hashsalt": "lsml-tui"}):
        warnings.simplefilter("ignore")                 # experimental API
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # "trial omitted: inf"
        if len(names) > 1:
            ax, path = ov.plot_parallel_coordinate(study), out / "parallel-coordinates.svg"
        else:
            ax, path = ov.plot_slice(study), out / f"{names[0]}-vs-loss.svg"
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
        plt.close(fig)
    write_atomic(path, buf.getvalue())
    return path
