"""The run row of a dock tab (RunView) fed the statuses a job waiting for its model gets from
the engine, in a headless QGIS. Run by tests/test_plugin_model_wait.py; prints one JSON object
on its last line: what the status line says (whole and as shown) and the progress bar."""

from __future__ import annotations

import json

from qgis.PyQt.QtWidgets import QLabel
from qgis_harness import pump, report, slot_errors

from text2earth_qgis.run_view import RunView

DOCK_WIDTH = 380  # px: the dock's width on a 1366 x 768 screen


def running(step: int = 0, waiting: dict | None = None) -> dict:
    return {"id": "j", "state": "running", "step": step, "steps": 50, "tile": 1, "tiles": 1,
            "eta_s": None, "queue_position": None, "version": 2 + step,
            "waiting_for_model": waiting}


view = RunView("Generate")
view.resize(DOCK_WIDTH, 160)
view.show()
pump(0.2)
for name, status in [
    ("loading", running(waiting={"phase": "loading", "seconds": 6.2, "once": None})),
    ("compiling", running(waiting={"phase": "compiling", "seconds": 40.4, "once": True})),
    ("first_step", running(step=1)),
]:
    view.show_progress(status)
    pump(0.1)
    report[name] = {"text": view.status_label.text(), "shown": QLabel.text(view.status_label),
                    "progress": view.progress.value()}
report["slot_errors"] = slot_errors
print(json.dumps(report), flush=True)
