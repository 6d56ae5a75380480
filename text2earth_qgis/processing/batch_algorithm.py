"""Processing algorithm "Generate batch": a vector layer of extents + a prompt field -> one
synthetic COG per feature and a STAC collection, loaded as a layer group.

The batch runs as the engine's CLI (``python -m engine.cli batch``) from the engine's own venv,
in a child process: many items can take hours, and a Ray pool has no place in the service.
The features go to the engine as a CSV (bbox in the layer's CRS, crs, prompt, id, level), so
the engine reads exactly what the layer says, in its CRS.
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

from qgis.core import (
    NULL,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProject,
    QgsRasterLayer,
)

from ..core.contract import scale
from ..core.job_spec import PIPELINE_CHECK_SUFFIX
from ..core.result_names import file_result_name, result_name
from ..core.service.engine_manager import EngineManager
from ..qgis_compat import crs_for_engine, number_type, polygon_source_type
from .cli_runner import run_engine_cli
from .engine_run import checked_folder

LEVEL_CHOICES = [f"{lv} (~{scale.nominal_resolution(lv):g} m/px)" for lv in scale.LEVELS]
GROUP_KIND = "batch"  # the group: 'batch: <folder> — Text2Earth (synthetic)'
PROMPT_FIELDS = ("prompt", "caption", "text")  # what a layer of prompts calls its field
PARTIAL_EXIT = 7  # the CLI's code for "some items failed, the others were made"


def prompt_field(chosen: str, names: list[str]) -> str:
    """The field holding the prompts: the chosen one, else the first named prompt, caption
    or text (any case); ValueError naming the layer's fields when there is none."""
    if chosen:
        return chosen
    lowered = {name.lower(): name for name in reversed(names)}
    for wanted in PROMPT_FIELDS:
        if wanted in lowered:
            return lowered[wanted]
    raise ValueError("choose the field that holds each extent's prompt (the layer has no "
                     f"field named prompt, caption or text; its fields: {', '.join(names)})")


def _text(value) -> str:
    """A field's value as text; NULL (QVariant or None) as empty."""
    return "" if value is None or value == NULL else str(value)


def items_csv(source, prompt_field: str, id_field: str | None, level: int, path: Path) -> int:
    """The features as the engine's CSV; returns how many. Empty geometries are passed on
    with an empty bbox, so the engine reports them in its one-line way."""
    crs = crs_for_engine(source.sourceCrs())
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "prompt", "bbox", "crs", "level"])
        for feature in source.getFeatures():
            geometry = feature.geometry()
            box = "" if geometry.isEmpty() else geometry.boundingBox()
            bbox = "" if box == "" else (f"{box.xMinimum()!r},{box.yMinimum()!r},"
                                         f"{box.xMaximum()!r},{box.yMaximum()!r}")
            ident = _text(feature[id_field]) if id_field else f"feature-{feature.id()}"
            writer.writerow([ident, _text(feature[prompt_field]), bbox, crs, level])
            count += 1
    return count


class GenerateBatchAlgorithm(QgsProcessingAlgorithm):
    INPUT, PROMPT_FIELD, ID_FIELD, LEVEL_PARAM = "INPUT", "PROMPT_FIELD", "ID_FIELD", "LEVEL"
    STEPS, WORKERS, RAY_ADDRESS, OUTPUT = "STEPS", "WORKERS", "RAY_ADDRESS", "OUTPUT"

    def __init__(self, manager: EngineManager) -> None:
        super().__init__()
        self.manager = manager
        self._outputs: list[str] = []
        self._group = ""

    def createInstance(self):  # noqa: N802 - QGIS's name
        return GenerateBatchAlgorithm(self.manager)

    def name(self) -> str:
        return "generatebatch"

    def displayName(self) -> str:  # noqa: N802
        return "Generate batch"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Generates one SYNTHETIC image (Text2Earth AI model) per polygon of a layer, over "
            "its bounding box in the layer's CRS, with the prompt in the chosen field, into a "
            "folder of Cloud-Optimized GeoTIFFs with a STAC collection (collection.json). "
            "Features already generated with the same inputs are skipped; a feature that fails "
            "is reported and the others go on. Several workers run on Ray, locally or on a "
            "cluster (Ray address). The results are loaded as a group."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.INPUT, "Extents (polygons)", [polygon_source_type()]))
        # Optional with a default of "prompt": the dialog picks the layer's prompt field
        # instead of its first (fid); empty, a field named prompt / caption / text is used.
        self.addParameter(QgsProcessingParameterField(
            self.PROMPT_FIELD, "Prompt field (empty: the field named prompt, caption or text)",
            defaultValue="prompt", parentLayerParameterName=self.INPUT, optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.ID_FIELD, "Id field (names the files; default: the feature id)",
            parentLayerParameterName=self.INPUT, optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.LEVEL_PARAM, "Google level", options=LEVEL_CHOICES,
            defaultValue=scale.LEVELS.index(17)))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, "Steps", number_type("Integer"), defaultValue=50, minValue=1,
            maxValue=1000))
        self.addParameter(QgsProcessingParameterNumber(
            self.WORKERS, "Workers (more than 1: Ray)", number_type("Integer"), defaultValue=1,
            minValue=1, maxValue=256))
        self.addParameter(QgsProcessingParameterString(
            self.RAY_ADDRESS, "Ray cluster address (host:port; empty: this machine)",
            optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT, "Output folder"))

    def arguments(self, items: Path, out_dir: str, steps: int, workers: int,
                  address: str) -> list[str]:
        """The engine CLI's arguments (after ``python -m engine.cli``)."""
        args = ["batch", str(items), "--out-dir", out_dir, "--steps", str(steps),
                "--workers", str(workers), "--quiet"]
        settings = self.manager.settings
        if settings.model:
            args += ["--model", settings.model]
        if settings.device and settings.device != "auto":
            args += ["--device", settings.device]
        if settings.demo_fallback:  # as the service: without real weights, a pipeline check
            args.append("--demo-fallback")
        if address:
            args += ["--ray-address", address]
        return args

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException("choose a polygon layer of extents")
        names = [field.name() for field in source.fields()]
        chosen = self.parameterAsString(parameters, self.PROMPT_FIELD, context)
        try:  # a default ("prompt") the layer lacks is no choice: look for its prompt field
            field = prompt_field(chosen if chosen in names else "", names)
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
        id_field = self.parameterAsString(parameters, self.ID_FIELD, context) or None
        level = scale.LEVELS[self.parameterAsEnum(parameters, self.LEVEL_PARAM, context)]
        out_dir = self.parameterAsString(parameters, self.OUTPUT, context)
        checked_folder(str(Path(out_dir) / "collection.json"))
        with tempfile.TemporaryDirectory(prefix="t2e-batch-") as tmp:
            items = Path(tmp) / "items.csv"
            total = items_csv(source, field, id_field, level, items)
            if total == 0:
                raise QgsProcessingException("the layer has no features")
            args = self.arguments(
                items, out_dir,
                self.parameterAsInt(parameters, self.STEPS, context),
                self.parameterAsInt(parameters, self.WORKERS, context),
                self.parameterAsString(parameters, self.RAY_ADDRESS, context).strip())
            feedback.pushInfo(f"running the Text2Earth engine on {total} extent(s), prompts "
                              f"from the field {field!r}…")
            folder = Path(out_dir)
            before = {p.name for p in folder.glob("*.tif")}

            def progress() -> float:  # the COGs appearing (each written whole, then renamed)
                return 100.0 * len({p.name for p in folder.glob("*.tif")} - before) / total

            run = run_engine_cli(
                self.manager, args, feedback, progress,
                cancelled="cancelled: the items made so far are kept; running again skips them",
                ok_codes=(0, PARTIAL_EXIT))
        report = self._report(folder, run.stderr)
        for failure in (r for r in report["results"] if r["status"] == "failed"):
            feedback.reportError(f"{failure['key']}: {failure['error']}", False)
        self._outputs = sorted(r["out"] for r in report["results"]
                               if r["status"] in ("done", "skipped"))
        self._group = result_name(GROUP_KIND, folder.name)
        if any(Path(p).stem.endswith(PIPELINE_CHECK_SUFFIX) for p in self._outputs):
            feedback.pushWarning("No real Text2Earth weights on this machine: the images are "
                                 "pipeline checks made with the built-in demo weights, not "
                                 "imagery. Set up the model in the plugin's settings.")
        feedback.pushInfo(f"{report['done']} made, {report['skipped']} already there, "
                          f"{report['failed']} failed; STAC: {folder / 'collection.json'}")
        return {self.OUTPUT: out_dir}

    def _report(self, out_dir: Path, stderr: str) -> dict:
        try:
            return json.loads((out_dir / "batch-report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise QgsProcessingException(f"the engine wrote no batch report: {stderr[-300:]}") \
                from None

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - main thread
        if not self._outputs:
            return {}
        project = context.project() or QgsProject.instance()
        root = project.layerTreeRoot()
        old = root.findGroup(self._group)
        if old is not None:  # a rerun replaces its group, layers and all
            project.removeMapLayers(old.findLayerIds())
            root.removeChildNode(old)
        group = root.insertGroup(0, self._group)
        for path in self._outputs:
            layer = QgsRasterLayer(path, file_result_name(path), "gdal")
            if layer.isValid():
                project.addMapLayer(layer, False)
                group.addLayer(layer)
        return {}
