"""Processing algorithm "Label raster (zero-shot)": a raster -> a grid of model-sized windows,
each with the scene label Git-RSCLIP gives it (`text2earth label` in the engine's own Python;
the plugin never imports torch). Useful to check that a generated or edited area shows what
was asked."""

from __future__ import annotations

import json
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
from ..core.service.engine_manager import EngineManager
from .cli_runner import run_engine_cli
from .engine_run import checked_folder

GRID_SUFFIXES = (".gpkg", ".geojson")


def grid_destination(destination: str) -> str:
    if not destination.lower().endswith(GRID_SUFFIXES):
        raise QgsProcessingException("the label grid must be a GeoPackage (.gpkg) or GeoJSON "
                                     "(.geojson) file")
    return checked_folder(destination)


def label_arguments(raster: str, destination: str, labels: str | None,
                    rank_model: str | None) -> list[str]:
    """The engine CLI's arguments (after ``python -m engine.cli``)."""
    args = ["label", "--raster", raster, "--out", destination,
            "--overwrite"]  # Processing asked for this file: it may replace it
    if labels:
        args += ["--labels", labels]
    if rank_model:
        args += ["--rank-model", rank_model]
    return args


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
        labels = self.parameterAsFile(parameters, self.LABELS, context) or None
        rank_model = self.parameterAsString(parameters, self.RANK_MODEL, context).strip()
        feedback.pushInfo(f"labelling {Path(raster).name} with Git-RSCLIP…")
        run = run_engine_cli(self.manager, label_arguments(raster, destination, labels,
                                                           rank_model or None), feedback)
        try:
            summary = json.loads(run.stdout)
        except ValueError:
            raise QgsProcessingException(
                f"the engine wrote no label summary: {run.stderr.strip()[-300:]}") from None
        counts = ", ".join(f"{label} {n}" for label, n in summary["label_counts"].items())
        feedback.pushInfo(f"{summary['windows']} windows of {summary['window_size']} px: "
                          f"{counts}")
        return {self.OUTPUT: destination}
