"""Processing algorithm "Generate batch" in a headless QGIS: a polygon layer with a prompt
field -> the engine's CLI -> one COG per feature, loaded as a group; a feature without a
prompt is reported and the others are made.

Run by pytest, this file starts itself as a QGIS script (QGIS's GDAL must not meet
rasterio's in one process); the part under ``__main__`` is that script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_generate_batch_algorithm_loads_the_results_as_a_group(tmp_path, tiny_t2i):
    import rasterio

    # HF_HUB_OFFLINE and an empty model cache: the demo run finds no real weights, fast.
    (tmp_path / "empty-hub").mkdir()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", T2E_WORK=str(tmp_path),
               T2E_MODEL=str(tiny_t2i), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env,
                          timeout=500)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report.get("error") is None, report.get("error")
    out = tmp_path / "out"
    assert report["group"] == "batch: out — Text2Earth (synthetic)"
    assert report["layers"] == ["scene: east — Text2Earth (synthetic)",
                                "scene: west — Text2Earth (synthetic)"]
    assert any("nothing: no prompt" in e for e in report["errors"]), report["errors"]
    for name, (x0, y0, x1, y1) in (("west", (447000, 5411000, 447060, 5411060)),
                                   ("east", (447100, 5411000, 447150, 5411040))):
        with rasterio.open(out / f"{name}.tif") as src:
            assert src.crs.to_epsg() == 32632
            left, bottom, right, top = src.bounds
            assert (left, top) == (x0, y1)  # the feature's bounding box, in the layer's CRS
            assert abs(right - x1) < src.res[0] and abs(bottom - y0) < src.res[1]
            assert src.tags()["TEXT2EARTH_PROMPT"] == report["prompts"][name]
    assert (out / "collection.json").is_file()
    # Without real weights: the demo weights, as every other tool; the prompt field found by
    # its name (no field chosen), not the layer's first field.
    demo = report["demo"]
    assert demo.get("error") is None, demo.get("error")
    assert demo["files"] == ["west.pipeline-check.tif"]
    assert demo["layers"] == ["scene: west — Text2Earth (pipeline check)"]
    with rasterio.open(tmp_path / "demo" / "west.pipeline-check.tif") as src:
        assert src.tags()["TEXT2EARTH_PROMPT"] == "a lake"
        assert src.tags().get("TEXT2EARTH_PIPELINE_CHECK")
        assert src.crs.to_epsg() == 32632
    assert any("pipeline checks" in w for w in demo["warnings"]), demo["warnings"]
    assert demo["default_field"] == "prompt"


def probe() -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    import qgis_harness  # noqa: F401 - starts the QGIS app
    from qgis.core import (
        QgsApplication,
        QgsFeature,
        QgsGeometry,
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProject,
        QgsVectorLayer,
    )

    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    import processing
    from processing.core.Processing import Processing

    from text2earth_qgis.core.service.engine_manager import EngineManager, EngineSettings
    from text2earth_qgis.processing.provider import Text2EarthProvider

    Processing.initialize()
    manager = EngineManager(EngineSettings(python=sys.executable, model=os.environ["T2E_MODEL"],
                                           device="cpu"))
    provider = Text2EarthProvider(manager)  # kept: the registry does not own it
    if not QgsApplication.processingRegistry().addProvider(provider):
        raise RuntimeError("the Text2Earth provider was not registered")
    if provider.algorithm("generatebatch") is None:
        raise RuntimeError(f"no generatebatch in {[a.id() for a in provider.algorithms()]}")
    layer = QgsVectorLayer("Polygon?crs=EPSG:32632&field=name:string&field=prompt:string",
                           "extents", "memory")
    prompts = {"west": "farmland", "east": "a forest", "nothing": None}
    boxes = {"west": "POLYGON((447000 5411000, 447060 5411000, 447060 5411060, "
                     "447000 5411000))",
             "east": "POLYGON((447100 5411000, 447150 5411000, 447150 5411040, "
                     "447100 5411040, 447100 5411000))",
             "nothing": "POLYGON((447200 5411000, 447250 5411000, 447250 5411040, "
                        "447200 5411000))"}
    for name, wkt in boxes.items():
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        feature.setAttributes([name, prompts[name]])
        layer.dataProvider().addFeature(feature)
    QgsProject.instance().addMapLayer(layer)

    errors: list[str] = []

    class Feedback(QgsProcessingFeedback):
        def reportError(self, error, fatalError=False):  # noqa: N802, N803 - QGIS's names
            errors.append(error)

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    work = Path(os.environ["T2E_WORK"])
    processing.run("text2earth:generatebatch", {
        "INPUT": layer, "PROMPT_FIELD": "prompt", "ID_FIELD": "name", "LEVEL": 7,
        "STEPS": 1, "WORKERS": 1, "OUTPUT": str(work / "out")},
        context=context, feedback=Feedback())
    root = QgsProject.instance().layerTreeRoot()
    group = root.children()[0]
    report = {"group": group.name(), "errors": errors,
              "layers": sorted(child.name() for child in group.children()),
              "prompts": {k: v for k, v in prompts.items() if v}}
    report["demo"] = demo_probe(work, provider)
    return report


def demo_probe(work: Path, provider) -> dict:
    """No real weights anywhere: the batch runs on the demo weights; the field is "Caption"."""
    import processing
    from qgis.core import (
        QgsFeature,
        QgsGeometry,
        QgsProcessingFeedback,
        QgsProject,
        QgsVectorLayer,
    )

    provider.manager.settings.model = None
    provider.manager.settings.model_cache = str(work / "empty-hub")
    provider.manager.settings.demo_fallback = True
    layer = QgsVectorLayer("Polygon?crs=EPSG:32632&field=name:string&field=Caption:string",
                           "captions", "memory")
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromWkt(
        "POLYGON((447000 5411000, 447060 5411000, 447060 5411060, 447000 5411000))"))
    feature.setAttributes(["west", "a lake"])
    layer.dataProvider().addFeature(feature)
    warnings: list[str] = []

    class Feedback(QgsProcessingFeedback):
        def pushWarning(self, warning):  # noqa: N802 - QGIS's name
            warnings.append(warning)

    algorithm = provider.algorithm("generatebatch")
    default = algorithm.parameterDefinition("PROMPT_FIELD").defaultValue()
    processing.run("text2earth:generatebatch", {
        "INPUT": layer, "ID_FIELD": "name", "LEVEL": 7, "STEPS": 1, "WORKERS": 1,
        "OUTPUT": str(work / "demo")}, feedback=Feedback())
    group = QgsProject.instance().layerTreeRoot().children()[0]
    return {"files": sorted(p.name for p in (work / "demo").glob("*.tif")),
            "layers": sorted(child.name() for child in group.children()),
            "warnings": warnings, "default_field": default}


if __name__ == "__main__":
    import traceback

    try:
        result = probe()
    except Exception:  # noqa: BLE001 - reported to the test
        result = {"error": traceback.format_exc()}
    print(json.dumps(result), flush=True)
    os._exit(0)
