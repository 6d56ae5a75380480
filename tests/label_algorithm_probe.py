"""Headless QGIS: run the "Label raster (zero-shot)" Processing algorithm for real (the engine
CLI in this Python) and report what QGIS reads back. Run as a script by test_label_algorithm.

argv: raster, destination, labels file; env TEXT2EARTH_RANK_MODEL names the tiny model.
"""

from __future__ import annotations

import json
import os
import sys

from qgis.core import QgsApplication, QgsProcessingFeedback, QgsRasterLayer, QgsVectorLayer
from qgis_harness import app, iface  # noqa: F401 - starts QGIS first


class Feedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.infos, self.errors = [], []

    def pushInfo(self, info):  # noqa: N802 - QGIS's name
        self.infos.append(info)

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        self.errors.append(error)


def main() -> None:
    import processing
    from processing.core.Processing import Processing

    from text2earth_qgis.core.service.engine_manager import EngineManager, EngineSettings
    from text2earth_qgis.processing.provider import Text2EarthProvider

    raster, destination, labels = sys.argv[1:4]
    Processing.initialize()
    provider = Text2EarthProvider(EngineManager(EngineSettings(python=sys.executable)))
    QgsApplication.processingRegistry().addProvider(provider)
    report = {"algorithms": [a.id() for a in provider.algorithms()]}
    layer = QgsRasterLayer(raster, "source", "gdal")
    feedback = Feedback()
    try:
        result = processing.run("text2earth:labelraster", {
            "INPUT": layer, "LABELS": labels, "OUTPUT": destination}, feedback=feedback)
        grid = QgsVectorLayer(result["OUTPUT"], "grid", "ogr")
        report.update(valid=grid.isValid(), crs=grid.crs().authid(), infos=feedback.infos,
                      features=[{"label": f["label"], "probability": f["probability"],
                                 "col": f["col"], "bbox": [f.geometry().boundingBox().xMinimum(),
                                                           f.geometry().boundingBox().xMaximum()]}
                                for f in grid.getFeatures()])
    except Exception as exc:  # noqa: BLE001 - reported to the test
        report["error"] = str(exc)
        report["errors"] = feedback.errors
    bad = processing_error(layer, destination)
    report["bad_destination"] = bad
    print(json.dumps(report))
    sys.stdout.flush()
    os._exit(0)  # QGIS's exit can crash headless; the report is out


def processing_error(layer, destination: str) -> str:
    import processing

    try:
        processing.run("text2earth:labelraster", {
            "INPUT": layer, "OUTPUT": destination.rsplit(".", 1)[0] + ".csv"})
    except Exception as exc:  # noqa: BLE001
        return str(exc)
    return ""


main()
