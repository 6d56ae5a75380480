"""Processing algorithm "Label raster (zero-shot)": a raster -> a grid of model-sized windows,
each with the scene label Git-RSCLIP gives it (`text2earth label` in the engine's own Python;
the plugin never imports torch). Useful to check that a generated or edited area shows what
was asked."""

from __future__ import annotations

import json
import os
import subprocess  # nosec B404 - the engine's own CLI, argument list, no shell
import time
from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from ..core.edit_spec import raster_file
from ..core.engine_manager import NO_ENGINE_MESSAGE, EngineManager, find_engine_python

GRID_SUFFIXES = (".gpkg", ".geojson")
POLL_S = 0.2


def grid_destination(destination: str) -> str:
    if not destination.lower().endswith(GRID_SUFFIXES):
        raise QgsProcessingException("the label grid must be a GeoPackage (.gpkg) or GeoJSON "
                                     "(.geojson) file")
    return destination


def label_command(python: str, raster: str, destination: str, labels: str | None,
                  rank_model: str | None) -> list[str]:
    command = [python, "-m", "engine.cli", "label", "--raster", raster, "--out", destination,
               "--overwrite"]  # Processing asked for this file: it may replace it
    if labels:
        command += ["--labels", labels]
    if rank_model:
        command += ["--rank-model", rank_model]
    return command


def run_label(command: list[str], env: dict, feedback) -> dict:
    """Run the engine CLI; its JSON summary, or QgsProcessingException with its one line."""
    process = subprocess.Popen(  # noqa: S603 # nosec B603 - our CLI, no shell
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    while process.poll() is None:
        if feedback.isCanceled():
            process.terminate()
            process.wait(timeout=30)
            raise QgsProcessingException("cancelled: nothing was written")
        time.sleep(POLL_S)
    out, err = process.communicate()
    if process.returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        message = lines[-1] if lines else f"the engine exited with {process.returncode}"
        raise QgsProcessingException(message.removeprefix("text2earth: error: "))
    return json.loads(out)


class LabelRasterAlgorithm(QgsProcessingAlgorithm):
    INPUT, LABELS, RANK_MODEL, OUTPUT = "INPUT", "LABELS", "RANK_MODEL", "OUTPUT"

    def __init__(self, manager: EngineManager) -> None:
        super().__init__()
        self.manager = manager

    def createInstance(self):  # noqa: N802 - QGIS's name
        return LabelRasterAlgorithm(self.manager)

    def name(self) -> str:
        return "labelraster"

    def displayName(self) -> str:  # noqa: N802
        return "Label raster (zero-shot)"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Cuts a raster into windows of Git-RSCLIP's input size (256 px) and labels each "
            "with the scene class the model finds most likely, zero-shot: by default one of "
            "the 30 classes of the AID benchmark (airport, farmland, forest, port, ...), or "
            "your own labels, one per line in a text file. The result is a polygon grid in "
            "the raster's CRS with each window's label and probability. Useful to check that "
            "a generated or edited area shows what was asked. Needs the Git-RSCLIP model "
            "(lcybuaa/Git-RSCLIP) on this machine, or a folder with it."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster to label"))
        self.addParameter(QgsProcessingParameterFile(
            self.LABELS, "Labels (a text file, one per line; empty: AID's 30 classes)",
            optional=True, extension="txt"))
        self.addParameter(QgsProcessingParameterString(
            self.RANK_MODEL, "Git-RSCLIP model (hub id or folder; empty: the default)",
            optional=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, "Label grid", defaultValue="TEMPORARY_OUTPUT"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        destination = grid_destination(
            self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        try:
            raster = raster_file(layer.providerType() if layer else None,
                                 layer.source() if layer else None)
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
        python = find_engine_python(self.manager.settings.python)
        if python is None:
            raise QgsProcessingException(NO_ENGINE_MESSAGE)
        labels = self.parameterAsFile(parameters, self.LABELS, context) or None
        rank_model = self.parameterAsString(parameters, self.RANK_MODEL, context).strip()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        if self.manager.settings.model_cache:
            env["HF_HUB_CACHE"] = self.manager.settings.model_cache
        feedback.pushInfo(f"labelling {Path(raster).name} with Git-RSCLIP…")
        summary = run_label(label_command(python, raster, destination, labels,
                                          rank_model or None), env, feedback)
        counts = ", ".join(f"{label} {n}" for label, n in summary["label_counts"].items())
        feedback.pushInfo(f"{summary['windows']} windows of {summary['window_size']} px: "
                          f"{counts}")
        return {self.OUTPUT: destination}
