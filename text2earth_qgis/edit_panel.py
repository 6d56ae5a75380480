"""The dock's "Edit raster" tab: regenerate what is inside polygons of a raster layer, or
extend it beyond an edge. Collects input and shows state; the jobs are built by
core/edit_spec.py and run by the same task as generations."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsGeometry,
    QgsProject,
)
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from . import sampling_widgets
from .core.contract import scale
from .core.contract.files import check_output_folder
from .core.edit_spec import (
    DEFAULT_DILATE,
    DEFAULT_FEATHER,
    EDIT_GUIDANCE,
    MAX_MASK_PX,
    SIDES,
    edit_output_name,
    edit_scale_text,
    extend_output_name,
    raster_file,
    require_crs,
    unused_name,
)
from .form_layout import finish_form, narrow, remembered_section, scrolled_form, wrapping_form
from .forms import EditForm
from .layer_render import render_for_edit
from .layers import add_edited_layer
from .qgis_compat import crs_for_engine, layer_filter
from .qgis_geometry import geojson_bounds, geojson_geometries, ground_spans
from .run_view import RunPanel
from .sampling_widgets import MAX_SEED
from .sketch_tool import PolygonSketchTool
from .tasks import GenerateTask

EDIT_TYPES = ("edit", "extend")
AUTO_LEVEL = scale.MIN_LEVEL - 1  # the level spin box's "auto" (its special value)


class EditPanel(RunPanel):
    """Raster layer + mask (drawn polygons or selected features) + prompt -> edited layer."""

    failed_text = "the edit failed"

    def __init__(self, dock) -> None:
        super().__init__(dock)
        self.canvas = dock.canvas
        self.source_layer = None
        self.rendered = False  # the edit's source is a served layer rendered to a GeoTIFF
        self.sketch = PolygonSketchTool(self.canvas)
        self.sketch.changed.connect(self._show_mask_count)
        self.sketch.deactivated.connect(self._sketch_deactivated)
        self._build_ui()
        self._show_mask_count()

    def _build_ui(self) -> None:
        layout = scrolled_form(self, self.make_run_view("Edit raster"))

        source_box = QGroupBox("Raster to edit")
        source_form = wrapping_form(source_box)
        self.raster_combo = QgsMapLayerComboBox()
        self.raster_combo.setFilters(layer_filter("RasterLayer"))
        self.raster_combo.setToolTip("a local raster file (GeoTIFF...); the file is never "
                                     "written: the result is a new layer above it")
        self.scale_label = QLabel()
        self.scale_label.setWordWrap(True)
        source_form.addRow("Layer", self.raster_combo)
        source_form.addRow(self.scale_label)
        layout.addWidget(source_box)

        mask_box = QGroupBox("Area to regenerate")
        mask_layout = QVBoxLayout(mask_box)
        row = QHBoxLayout()
        self.draw_button = QPushButton("Draw polygons")
        self.draw_button.setCheckable(True)
        self.draw_button.setToolTip("left click: add a vertex; right click or double click: "
                                    "close the polygon; Backspace: undo a vertex; Esc: drop")
        self.draw_button.toggled.connect(self.toggle_sketch)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.sketch.clear)
        self.mask_label = QLabel()
        row.addWidget(self.draw_button)
        row.addWidget(self.clear_button)
        mask_layout.addLayout(row)
        mask_layout.addWidget(self.mask_label)
        self.use_selected_check = QCheckBox("or use the selected features of")
        self.mask_layer_combo = QgsMapLayerComboBox()
        self.mask_layer_combo.setFilters(layer_filter("PolygonLayer"))
        mask_layout.addWidget(self.use_selected_check)
        mask_layout.addWidget(self.mask_layer_combo)
        narrow(self.raster_combo, self.mask_layer_combo)
        layout.addWidget(mask_box)

        prompt_box = QGroupBox("Prompt")
        prompt_form = wrapping_form(prompt_box)
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("e.g. a park with trees and paths")
        self.prompt_edit.setFixedHeight(50)
        self.seed_spin, _, seed_row = sampling_widgets.seed_row()
        self.level_spin = self._spin(AUTO_LEVEL, scale.MAX_LEVEL, AUTO_LEVEL)
        self.level_spin.setSpecialValueText("auto (from the raster's resolution)")
        prompt_form.addRow(self.prompt_edit)
        prompt_form.addRow("Level", self.level_spin)
        prompt_form.addRow("Seed", seed_row)
        layout.addWidget(prompt_box)

        self.advanced_box = remembered_section("Advanced", "text2earth/edit_advanced_collapsed")
        adv = wrapping_form(self.advanced_box)
        self.negative_edit = QLineEdit()
        self.negative_edit.setPlaceholderText("what to avoid")
        self.steps_spin = sampling_widgets.steps_spin()
        self.guidance_spin = sampling_widgets.guidance_spin(EDIT_GUIDANCE)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("default (lcybuaa/Text2Earth-inpainting)")
        self.dilate_spin = self._spin(0, MAX_MASK_PX, DEFAULT_DILATE, " px")
        self.dilate_spin.setToolTip("source pixels the mask grows by")
        self.feather_spin = self._spin(0, MAX_MASK_PX, DEFAULT_FEATHER, " px")
        self.feather_spin.setToolTip("width of the soft edge, inside the grown mask")
        self.fill_nodata_check = QCheckBox("fill nodata / transparent pixels")
        adv.addRow("Negative", self.negative_edit)
        adv.addRow("Steps", self.steps_spin)
        adv.addRow("Guidance", self.guidance_spin)
        adv.addRow("Inpainting model", self.model_edit)
        adv.addRow("Grow by", self.dilate_spin)
        adv.addRow("Feather", self.feather_spin)
        adv.addRow(self.fill_nodata_check)
        layout.addWidget(self.advanced_box)

        extend_box = QGroupBox("Extend beyond an edge")
        extend_outer = QVBoxLayout(extend_box)
        extend_layout = QHBoxLayout()
        sides_layout = QGridLayout()
        extend_outer.addLayout(extend_layout)
        extend_outer.addLayout(sides_layout)
        self.distance_spin = QDoubleSpinBox()
        self.distance_spin.setRange(0.0, 100000.0)
        self.distance_spin.setDecimals(1)
        self.distance_spin.setValue(500.0)
        self.distance_spin.setSuffix(" m")
        extend_layout.addWidget(QLabel("Distance"))
        extend_layout.addWidget(self.distance_spin, 1)
        self.extend_buttons: dict[str, QPushButton] = {}
        for index, side in enumerate(SIDES):
            button = QPushButton(side.capitalize())
            button.setToolTip(f"extend the raster by the distance to the {side}"
                              if side != "all" else "extend the raster on every side")
            button.clicked.connect(lambda _=False, s=side: self.run_extend(s))
            sides_layout.addWidget(button, index // 3, index % 3)
            self.extend_buttons[side] = button
        layout.addWidget(extend_box)

        self.run_button = self.run_view.run_button
        self.run_button.clicked.connect(self.run_edit)
        layout.addStretch(1)
        self.raster_combo.layerChanged.connect(self.show_scale)
        self.level_spin.valueChanged.connect(self.show_scale)
        self.show_scale()
        finish_form(self)

    @staticmethod
    def _spin(low: int, high: int, value: int, suffix: str = "") -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setValue(value)
        spin.setSuffix(suffix)
        return spin

    def show_scale(self, *args) -> None:
        """The level and resampling the engine will use, before Run (at the raster's centre)."""
        layer = self.raster_combo.currentLayer()
        self.scale_label.setText(self._scale_text(layer) if layer is not None else "")

    def _scale_text(self, layer) -> str:
        crs = layer.crs()
        if not crs.isValid():
            return "this raster has no CRS: assign one in Layer Properties > Source"
        if layer.providerType() != "gdal":
            level = self.level_spin.value()
            at = f"level {level}" if level != AUTO_LEVEL else "the level of the map's zoom"
            return (f"a {layer.providerType().upper()} layer, not a file: the area around the "
                    f"polygons is rendered at {at} into a GeoTIFF in the output folder, and "
                    "that is edited")
        try:
            centre = layer.extent().center()
            metres = ground_spans(crs, QgsProject.instance().transformContext(), centre,
                                  layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY())
            latitude = QgsCoordinateTransform(
                crs, QgsCoordinateReferenceSystem("EPSG:4326"),
                QgsProject.instance()).transform(centre).y()
            level = self.level_spin.value()
            return edit_scale_text(metres, latitude, None if level == AUTO_LEVEL else level)
        except (QgsCsException, ValueError, ZeroDivisionError) as exc:
            return f"the raster's scale cannot be read here: {exc}"

    def leave(self) -> None:
        """Another tab took over: the sketch tool leaves the map (the polygons stay)."""
        if self.canvas.mapTool() is self.sketch:
            self.draw_button.setChecked(False)

    # ----- the mask ------------------------------------------------------------------------

    def toggle_sketch(self, on: bool) -> None:
        if on:
            self.canvas.setMapTool(self.sketch)
        elif self.canvas.mapTool() is self.sketch:
            self.canvas.unsetMapTool(self.sketch)

    def _sketch_deactivated(self) -> None:
        # Another map tool took over: show it, without unsetting the tool a second time.
        self.draw_button.blockSignals(True)
        self.draw_button.setChecked(False)
        self.draw_button.blockSignals(False)

    def _show_mask_count(self) -> None:
        count = len(self.sketch.polygons)
        self.mask_label.setText(f"{count} polygon{'s' if count != 1 else ''} drawn")

    def mask_geometries(self, crs: QgsCoordinateReferenceSystem) -> list[dict]:
        """The mask polygons as GeoJSON geometries in ``crs`` (the raster's)."""
        if self.use_selected_check.isChecked():
            layer = self.mask_layer_combo.currentLayer()
            if layer is None:
                raise ValueError("choose the polygon layer whose selected features to use")
            features = layer.selectedFeatures()
            if not features:
                raise ValueError(f"no features of {layer.name()!r} are selected: select the "
                                 "polygons to regenerate, or draw them")
            pairs = [(QgsGeometry(f.geometry()), layer.crs()) for f in features]
        else:
            pairs = self.sketch.geometries()
        return geojson_geometries(pairs, crs, QgsProject.instance().transformContext())

    # ----- the jobs ------------------------------------------------------------------------

    def _source(self):
        layer = self.raster_combo.currentLayer()
        path = raster_file(layer.providerType() if layer else None,
                           layer.source() if layer else None)
        return layer, path

    def form(self, side: str | None = None) -> EditForm:
        """The tab's settings (the one place they are read): an edit of the masked area, or
        the extension beyond ``side``. A layer that is no local file has no ``raster``."""
        try:
            _, raster = self._source()
        except ValueError:
            raster = ""
        level, edit = self.level_spin.value(), side is None
        return EditForm(
            prompt=self.prompt_edit.toPlainText().strip(),
            raster=raster,
            side=side,
            distance_m=None if edit else self.distance_spin.value(),
            negative_prompt=self.negative_edit.text().strip(),
            level=None if level == AUTO_LEVEL else level,
            seed=self.seed_spin.value(),
            steps=self.steps_spin.value(),
            guidance=self.guidance_spin.value(),
            model=self.model_edit.text().strip(),
            dilate=self.dilate_spin.value() if edit else None,
            feather=self.feather_spin.value() if edit else None,
            fill_nodata=self.fill_nodata_check.isChecked() if edit else None,
        )

    def show_form(self, form: EditForm) -> None:
        """Fill the tab from ``form`` (the one place they are written); the other kind's
        fields (an edit's distance, an extension's mask options) stay as they are."""
        self.prompt_edit.setPlainText(form.prompt)
        self.negative_edit.setText(form.negative_prompt)
        if form.seed is not None:
            self.seed_spin.setValue(form.seed % (MAX_SEED + 1))
        self.steps_spin.setValue(form.steps)
        self.guidance_spin.setValue(form.guidance)
        self.level_spin.setValue(AUTO_LEVEL if form.level is None else form.level)
        self.model_edit.setText(form.model)
        if form.dilate is not None:
            self.dilate_spin.setValue(form.dilate)
        if form.feather is not None:
            self.feather_spin.setValue(form.feather)
        if form.fill_nodata is not None:
            self.fill_nodata_check.setChecked(form.fill_nodata)
        if form.distance_m is not None:
            self.distance_spin.setValue(form.distance_m)
        for layer in QgsProject.instance().mapLayers().values():
            if form.raster and layer.source().split("|")[0] == form.raster:
                self.raster_combo.setLayer(layer)
                break

    def _destination(self, name: str) -> Path:
        folder = check_output_folder(self.dock.output_folder())  # OutputFolderError: a ValueError
        return folder / unused_name(name, lambda n: (folder / n).exists())

    def build_edit(self) -> tuple[dict, Path]:
        """(job, destination); ValueError with the user's message for a bad input."""
        layer = self.raster_combo.currentLayer()
        self.rendered = False
        form = self.form()
        if not form.raster and (layer is None or not layer.isValid()
                                or layer.providerType() == "gdal"):
            self._source()  # raises its message: no layer, or no file to read
        # Otherwise a WMS / XYZ / memory layer: rendered once the polygons are known.
        mask_crs = require_crs(crs_for_engine(layer.crs()))
        geometries = self.mask_geometries(layer.crs())
        path = form.raster
        if not path and geometries:
            form.check()  # before anything is drawn
            path = str(self._render(layer, geometries))
            self.rendered = True
        job = form.to_job(geometries, mask_crs, raster=path)
        return job, self._destination(edit_output_name(path, job["prompt"], job["seed"]))

    def render_level(self, centre) -> int:
        """The level a served layer is rendered at: the chosen one, else the map's zoom."""
        level = self.level_spin.value()
        if level != AUTO_LEVEL:
            return level
        latitude = QgsCoordinateTransform(
            self.raster_combo.currentLayer().crs(), QgsCoordinateReferenceSystem("EPSG:4326"),
            QgsProject.instance()).transform(centre).y()
        return scale.level_for_resolution(self.dock.generate.screen_pixel_m(), latitude).level

    def _render(self, layer, geometries: list[dict]) -> Path:
        level = self.render_level(geojson_bounds(geometries).center())
        self.status_label.setText(f"rendering {layer.name()} at level {level} to a GeoTIFF…")
        QCoreApplication.processEvents()
        return render_for_edit(layer, geometries, level, self.dock.output_folder())

    def build_extend(self, side: str) -> tuple[dict, Path]:
        self._source()  # an extension needs the raster's file: its message, else
        form = self.form(side)
        job = form.to_job()
        return job, self._destination(
            extend_output_name(form.raster, side, job["by"], job["prompt"], job["seed"]))

    def run_edit(self) -> None:
        self.start(self.build_edit)

    def run_extend(self, side: str) -> None:
        self.start(lambda: self.build_extend(side))

    def new_task(self, job: dict, destination: Path) -> GenerateTask:
        self.source_layer = self.raster_combo.currentLayer()  # the result goes above it
        return super().new_task(job, destination)

    def show_running(self, running: bool) -> None:
        for button in self.extend_buttons.values():
            button.setEnabled(not running)

    def add_layer(self, task: GenerateTask):
        return add_edited_layer(task.path, self.source_layer, task.job, task.result,
                                copy_style=not self.rendered)

    def run_ended(self, task: GenerateTask, layer) -> None:
        if layer is not None:
            # The run is over: its polygons and the sketch tool would only hide the result.
            self.draw_button.setChecked(False)
            self.sketch.clear()
            self.dock.add_history(task.job, {**task.result, "path": task.path},
                                  self.run_view.last_preview)
            self.layer_added.emit(layer)

    # ----- reuse ---------------------------------------------------------------------------

    def load_job(self, job: dict) -> None:
        """Fill the tab from an edit or extend job (history, or the layer's action)."""
        self.show_form(EditForm.from_job(job))

    def cleanup(self) -> None:
        super().cleanup()
        if self.canvas.mapTool() is self.sketch:
            self.canvas.unsetMapTool(self.sketch)
        self.sketch.cleanup()
        self.sketch.deleteLater()  # the canvas owns it: it would outlive the plugin
