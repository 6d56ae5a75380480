"""The dock's Generate tab: prompt, extent, resolution, quality and variations in a scrolling
form, Generate / Cancel / progress pinned below it. Collects input and shows state; jobs,
names and size checks come from core/."""

from __future__ import annotations

import random
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDistanceArea,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsSettings,
)
from qgis.gui import QgsFileWidget, QgsMapToolExtent, QgsRubberBand
from qgis.PyQt.QtCore import QSize, QStandardPaths, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
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
    QWidget,
)

from . import sampling_widgets
from .core.candidates import (
    MAX_CANDIDATES,
    candidate_job,
    candidate_paths,
    candidate_result,
)
from .core.contract import scale
from .core.contract.files import check_output_folder, default_output_folder, unused_name
from .core.contract.tiles import DEFAULT_OVERLAP, DEFAULT_TILE
from .core.init_image import init_image_name
from .core.job_spec import (
    AUTO,
    DEFAULT_PATTERN,
    DEFAULT_QUALITY,
    LEVEL,
    QUALITY,
    RESOLUTION,
    SCENE_METHODS,
    SCHEDULERS,
    Resolution,
    output_name,
    pipeline_check_name,
)
from .core.output_plan import check_size, grid_size, limit_from_health, pixel_size_units
from .core.prompt_examples import examples_for
from .core.setup.model_presence import demo_expected
from .form_layout import finish_form, narrow, remembered_section, scrolled_form, wrapping_form
from .forms import GenerateForm
from .init_render import render_layers_to_geotiff
from .layers import add_result_layer
from .qgis_compat import crs_for_engine, polygon_geometry_type
from .qgis_geometry import distance_area
from .run_view import RunPanel
from .sampling_widgets import MAX_SEED
from .start_layers import StartLayersSection
from .tasks import GenerateTask
from .variation_strip import VariationStrip, thumbnail_png

SETTINGS = "text2earth/"
WGS84 = "EPSG:4326"
WEB_MERCATOR = ("EPSG:3857", "EPSG:900913", "EPSG:102100")
CUSTOM = "Custom"
MAX_VARIATIONS = MAX_CANDIDATES
EXAMPLES_TITLE = "Examples…"


def documents_folder() -> str:
    return QStandardPaths.writableLocation(
        QStandardPaths.StandardLocation.DocumentsLocation) or str(Path.home())


def latitude_of(point, crs) -> float | None:
    if not crs.isValid():
        return None
    to_wgs84 = QgsCoordinateTransform(crs, QgsCoordinateReferenceSystem(WGS84),
                                      QgsProject.instance())
    try:
        return to_wgs84.transform(point).y()
    except Exception:  # noqa: BLE001 - a point outside the CRS's area: no latitude
        return None


class GeneratePanel(RunPanel):
    """Prompt + extent + resolution in; one georeferenced synthetic layer per variation out."""

    finished_run = pyqtSignal(object, dict, bytes)  # job, result (with path), preview PNG
    failed_text = "the generation failed"

    def __init__(self, dock) -> None:
        super().__init__(dock)
        self.iface = dock.iface
        self.canvas = dock.canvas
        self.manager = dock.manager
        self.extent: QgsRectangle | None = None
        self.extent_crs = QgsCoordinateReferenceSystem()
        self.outline_wanted = False
        self.tile, self.overlap = DEFAULT_TILE, DEFAULT_OVERLAP
        self.current_level: int | None = None
        # "Auto from map zoom": one screen pixel's ground size when the extent was set, so
        # zooming or resizing the map afterwards leaves the drawn extent's level alone.
        self.auto_metres: float | None = None
        self.examples_level: object = False  # the level the examples were listed for
        self.tool = QgsMapToolExtent(self.canvas)
        self.tool.extentChanged.connect(self.set_extent_from_tool)
        self.band = QgsRubberBand(self.canvas, polygon_geometry_type())
        # An outline only: a fill would tint the very layer the user is looking at.
        self.band.setStrokeColor(QColor(255, 140, 0, 230))
        self.band.setFillColor(QColor(0, 0, 0, 0))
        self.band.setWidth(2)
        self._build_ui()
        self.canvas.scaleChanged.connect(self.update_info)
        self.canvas.destinationCrsChanged.connect(self.update_info)
        self.update_info()

    # ----- building the form -------------------------------------------------------------

    def _build_ui(self) -> None:
        settings = QgsSettings()
        self.make_run_view("Generate")
        self.strip = VariationStrip()
        pinned = QWidget()
        pinned_layout = QVBoxLayout(pinned)
        pinned_layout.setContentsMargins(0, 0, 0, 0)
        pinned_layout.setSpacing(0)
        pinned_layout.addWidget(self.strip)
        pinned_layout.addWidget(self.run_view)
        layout = scrolled_form(self, pinned)

        prompt_box = QGroupBox("Prompt")
        prompt_layout = QVBoxLayout(prompt_box)
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("e.g. a river meanders through dense green forest")
        self.prompt_edit.setFixedHeight(52)
        self.examples = QComboBox()
        self.examples.addItem(EXAMPLES_TITLE)
        self.examples.setToolTip("prompts written for the current level, in the style the "
                                 "model was trained on")
        self.examples.activated.connect(self.use_example)
        prompt_layout.addWidget(self.prompt_edit)
        prompt_layout.addWidget(self.examples)
        layout.addWidget(prompt_box)

        extent_box = QGroupBox("Extent")
        extent_layout = QVBoxLayout(extent_box)
        buttons = QGridLayout()
        self.draw_button = QPushButton("Draw")
        self.draw_button.setToolTip("drag a rectangle on the map")
        self.draw_button.setCheckable(True)
        self.draw_button.toggled.connect(self.toggle_draw)
        self.square_check = QCheckBox("square")
        self.square_check.toggled.connect(self._square_changed)
        self.canvas_button = QPushButton("Canvas")
        self.canvas_button.setToolTip("the map's visible extent")
        self.canvas_button.clicked.connect(self.use_canvas_extent)
        self.layer_button = QPushButton("Layer")
        self.layer_button.setToolTip("the extent of the layer selected in the Layers panel")
        self.layer_button.clicked.connect(self.use_layer_extent)
        self.clear_extent_button = QPushButton("Clear")
        self.clear_extent_button.setToolTip("forget the extent and remove its outline")
        self.clear_extent_button.clicked.connect(self.clear_extent)
        for column, widget in enumerate((self.draw_button, self.canvas_button,
                                         self.layer_button, self.clear_extent_button)):
            buttons.addWidget(widget, 0, column)
        buttons.addWidget(self.square_check, 1, 0, 1, 4)
        self.extent_label = QLabel("no extent yet")
        self.extent_label.setWordWrap(True)
        extent_layout.addLayout(buttons)
        extent_layout.addWidget(self.extent_label)
        layout.addWidget(extent_box)

        res_box = QGroupBox("Resolution")
        res_form = wrapping_form(res_box)
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("Auto from map zoom", AUTO)
        self.mode_combo.addItem("Google level", LEVEL)
        self.mode_combo.addItem("Metres per pixel", RESOLUTION)
        self.level_spin = QSpinBox()
        self.level_spin.setRange(scale.MIN_LEVEL, scale.MAX_LEVEL)
        self.level_spin.setValue(17)
        self.resolution_spin = QDoubleSpinBox()
        self.resolution_spin.setRange(0.05, 1000.0)
        self.resolution_spin.setDecimals(4)
        self.resolution_spin.setValue(1.0)
        self.resolution_spin.setSuffix(" m")
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        for widget in (self.mode_combo, self.level_spin, self.resolution_spin):
            signal = getattr(widget, "currentIndexChanged", None) or widget.valueChanged
            signal.connect(self.update_info)
        self.mode_combo.activated.connect(self._mode_chosen)
        level_row = QHBoxLayout()
        level_row.addWidget(self.level_spin)
        level_row.addWidget(QLabel("or"))
        level_row.addWidget(self.resolution_spin)
        res_form.addRow("Mode", self.mode_combo)
        res_form.addRow("Level", level_row)
        res_form.addRow(self.info_label)
        layout.addWidget(res_box)

        run_box = QGroupBox("Quality and variations")
        run_form = wrapping_form(run_box)
        self.quality_combo = QComboBox()
        self.quality_combo.addItems([*QUALITY, CUSTOM])
        self.quality_combo.setToolTip(
            "Draft: 15 steps, a first look in minutes on a CPU; Standard: 30 steps; Best: 50 "
            "steps, the authors' setting")
        self.seed_spin, self.dice_button, seed_row = sampling_widgets.seed_row()
        self.seed_lock_check = QCheckBox("lock")
        self.seed_lock_check.setToolTip(
            "unticked: every Generate draws a new seed (a new variation); ticked: the seed "
            "shown is used again")
        seed_row.addWidget(self.seed_lock_check)
        # Typing a seed means "this one": keep it.
        self.seed_spin.lineEdit().textEdited.connect(
            lambda _text: self.seed_lock_check.setChecked(True))
        self.variations_spin = QSpinBox()
        self.variations_spin.setRange(1, MAX_VARIATIONS)
        self.variations_spin.setToolTip(
            "images per Generate, made in one run, each with its own seed and layer, best "
            "match to the prompt first: keep the ones you like")
        run_form.addRow("Quality", self.quality_combo)
        run_form.addRow("Seed", seed_row)
        run_form.addRow("Variations", self.variations_spin)
        layout.addWidget(run_box)

        self.start_layers = StartLayersSection(SETTINGS + "start_layers_collapsed")
        layout.addWidget(self.start_layers.box)

        self.advanced_box = remembered_section("Advanced", SETTINGS + "advanced_collapsed")
        adv = wrapping_form(self.advanced_box)
        self.negative_edit = QLineEdit()
        self.negative_edit.setPlaceholderText("what to avoid, e.g. clouds, haze")
        self.steps_spin = sampling_widgets.steps_spin()
        self.guidance_spin = sampling_widgets.guidance_spin(4.0)
        self.scheduler_combo = QComboBox()
        self.scheduler_combo.addItems(list(SCHEDULERS))
        self.scene_combo = QComboBox()
        for key, text in SCENE_METHODS.items():
            self.scene_combo.addItem(text, key)
        self.scene_combo.setToolTip(
            "how an extent larger than one model window is painted; Cascade paints the whole "
            "extent at a coarser level first and refines it, so rivers, roads and districts "
            "continue across the scene")
        self.model_edit = QLineEdit(settings.value(SETTINGS + "model", "", type=str))
        self.model_edit.setPlaceholderText("default (lcybuaa/Text2Earth)")
        self.pattern_edit = QLineEdit(
            settings.value(SETTINGS + "pattern", DEFAULT_PATTERN, type=str))
        self.pattern_edit.setToolTip("{date}, {time}, {prompt}, {seed}, {level}; a counter "
                                     "is added when the name is taken")
        adv.addRow("Negative", self.negative_edit)
        adv.addRow("Steps", self.steps_spin)
        adv.addRow("Guidance", self.guidance_spin)
        adv.addRow("Scheduler", self.scheduler_combo)
        adv.addRow("Scene", self.scene_combo)
        adv.addRow("Model", self.model_edit)
        adv.addRow("File name", self.pattern_edit)
        layout.addWidget(self.advanced_box)

        out_box = QGroupBox("Output folder")
        out_layout = QVBoxLayout(out_box)
        self.folder_widget = QgsFileWidget()
        self.folder_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder_widget.setFilePath(settings.value(SETTINGS + "output_folder", "", type=str))
        self.folder_widget.lineEdit().setPlaceholderText(
            "beside the project, or Documents/Text2Earth")
        out_layout.addWidget(self.folder_widget)
        layout.addWidget(out_box)
        layout.addStretch(1)
        narrow(self.examples, self.mode_combo, self.quality_combo, self.scheduler_combo,
               self.scene_combo)

        self.generate_button = self.run_view.run_button
        self.generate_button.clicked.connect(self.generate)

        self.quality_combo.setCurrentText(
            settings.value(SETTINGS + "quality", DEFAULT_QUALITY, type=str))
        self.quality_combo.currentTextChanged.connect(self.apply_quality)
        self.apply_quality(self.quality_combo.currentText())
        self.steps_spin.valueChanged.connect(self._sampling_edited)
        self.scheduler_combo.currentTextChanged.connect(self._sampling_edited)
        finish_form(self)

    # ----- quality -------------------------------------------------------------------------

    def apply_quality(self, name: str) -> None:
        preset = QUALITY.get(name)
        if preset is None:
            return
        for widget in (self.steps_spin, self.scheduler_combo):
            widget.blockSignals(True)
        self.steps_spin.setValue(preset.steps)
        self.scheduler_combo.setCurrentText(preset.scheduler)
        for widget in (self.steps_spin, self.scheduler_combo):
            widget.blockSignals(False)
        self.tile, self.overlap = preset.tile, preset.overlap
        self.update_info()

    def _sampling_edited(self, *args) -> None:
        preset = QUALITY.get(self.quality_combo.currentText())
        if preset is None or (self.steps_spin.value(), self.scheduler_combo.currentText()) == (
                preset.steps, preset.scheduler):
            return
        self.quality_combo.blockSignals(True)
        self.quality_combo.setCurrentText(CUSTOM)
        self.quality_combo.blockSignals(False)

    # ----- extent ---------------------------------------------------------------------------

    def _square_changed(self, square: bool) -> None:
        self.tool.setRatio(QSize(1, 1) if square else QSize(0, 0))

    def toggle_draw(self, on: bool) -> None:
        if on:
            self.canvas.setMapTool(self.tool)
        elif self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)

    def set_extent_from_tool(self, rect: QgsRectangle) -> None:
        if rect.isEmpty():
            return
        self.set_extent(rect, self.canvas.mapSettings().destinationCrs())
        self.tool.clearRubberBand()
        self.draw_button.setChecked(False)

    def use_canvas_extent(self) -> None:
        self.set_extent(self.canvas.extent(), self.canvas.mapSettings().destinationCrs())

    def use_layer_extent(self) -> None:
        layer = self.iface.activeLayer()
        if layer is None:
            self.dock.show_message("Select a layer in the Layers panel first.", warning=True)
            return
        project_crs = self.canvas.mapSettings().destinationCrs()
        transform = QgsCoordinateTransform(layer.crs(), project_crs, QgsProject.instance())
        self.set_extent(transform.transformBoundingBox(layer.extent()), project_crs)

    def set_extent(self, rect: QgsRectangle, crs: QgsCoordinateReferenceSystem,
                   auto_metres: float | None = None) -> None:
        """The extent to generate; in auto mode its level follows the map's zoom now (or the
        screen pixel ``auto_metres`` of a reused run), not any later zoom or canvas size."""
        self.extent = QgsRectangle(rect)
        self.extent_crs = QgsCoordinateReferenceSystem(crs)
        self.auto_metres = auto_metres or round(self.screen_pixel_m(), 4)
        self.outline_wanted = True
        self.show_outline()
        self.update_info()

    def show_outline(self) -> None:
        if self.extent is not None and self.outline_wanted:
            self.band.setToGeometry(QgsGeometry.fromRect(self.extent), self.extent_crs)

    def hide_outline(self) -> None:
        self.band.reset(polygon_geometry_type())

    def _mode_chosen(self, index: int) -> None:
        """The user picked "Auto from map zoom": the map's zoom of now is the one meant."""
        if self.mode_combo.itemData(index) == AUTO and self.extent is not None:
            self.auto_metres = round(self.screen_pixel_m(), 4)
            self.update_info()

    def clear_extent(self) -> None:
        self.extent = None
        self.auto_metres = None
        self.outline_wanted = False
        self.hide_outline()
        self.extent_label.setText("no extent yet")
        self.update_info()

    def leave(self) -> None:
        """Another tab took over: no outline, no extent tool left on the map."""
        self.hide_outline()
        if self.canvas.mapTool() is self.tool:
            self.draw_button.setChecked(False)

    def centre_latitude(self) -> float | None:
        rect = self.extent or self.canvas.extent()
        crs = self.extent_crs if self.extent else self.canvas.mapSettings().destinationCrs()
        if rect.isEmpty():
            return None
        return latitude_of(rect.center(), crs)

    def _distance_area(self) -> QgsDistanceArea:
        return distance_area(self.extent_crs, QgsProject.instance().transformContext())

    def extent_size_m(self) -> tuple[float, float] | None:
        if not self.extent or not self.extent_crs.isValid():
            return None
        area = self._distance_area()
        r, c = self.extent, self.extent.center()
        width = area.measureLine(QgsPointXY(r.xMinimum(), c.y()), QgsPointXY(r.xMaximum(), c.y()))
        height = area.measureLine(QgsPointXY(c.x(), r.yMinimum()), QgsPointXY(c.x(), r.yMaximum()))
        return width, height

    def metres_per_unit(self) -> tuple[float, float] | None:
        """Ground metres per CRS unit along x and y at the extent's centre, measured over a
        thousandth of the extent as the engine's grid does."""
        if not self.extent or not self.extent_crs.isValid():
            return None
        area = self._distance_area()
        c = self.extent.center()
        sx, sy = self.extent.width() * 1e-3, self.extent.height() * 1e-3
        if sx <= 0 or sy <= 0:
            return None
        gx = area.measureLine(QgsPointXY(c.x() - sx / 2, c.y()), QgsPointXY(c.x() + sx / 2, c.y()))
        gy = area.measureLine(QgsPointXY(c.x(), c.y() - sy / 2), QgsPointXY(c.x(), c.y() + sy / 2))
        return (gx / sx, gy / sy) if gx > 0 and gy > 0 else None

    def planned_size(self, level: int, ground_m: float) -> tuple[int, int] | None:
        """The engine's output size for the extent at ``level`` (engine/grid.py's rounding)."""
        per_unit = self.metres_per_unit()
        if per_unit is None:
            return None
        mercator = self.extent_crs.authid() in WEB_MERCATOR
        px, py = pixel_size_units(ground_m, *per_unit, level=level, web_mercator=mercator)
        return grid_size(self.extent.width(), self.extent.height(), px, py, self.max_pixels())

    def max_pixels(self) -> int:
        # A service that reports its limit is believed; else the engine's default.
        return limit_from_health(self.manager.health)

    # ----- resolution --------------------------------------------------------------------

    def screen_pixel_m(self) -> float:
        """Ground metres across one screen pixel at the map's centre, on the ellipsoid."""
        crs = self.canvas.mapSettings().destinationCrs()
        centre, step = self.canvas.center(), self.canvas.mapUnitsPerPixel()
        area = QgsDistanceArea()
        area.setSourceCrs(crs, QgsProject.instance().transformContext())
        area.setEllipsoid("WGS84")
        return area.measureLine(QgsPointXY(centre.x() - step / 2, centre.y()),
                                QgsPointXY(centre.x() + step / 2, centre.y()))

    def resolution(self) -> Resolution:
        mode = self.mode_combo.currentData()
        if mode == AUTO:
            # Rounded to 4 decimals, so a reused job comes back identical.
            metres = self.auto_metres if self.extent is not None and self.auto_metres else \
                round(self.screen_pixel_m(), 4)
        else:
            metres = self.resolution_spin.value()
        return Resolution(mode=mode, level=self.level_spin.value(), metres_per_pixel=metres)

    def update_info(self, *args) -> None:
        mode = self.mode_combo.currentData()
        self.level_spin.setEnabled(mode == LEVEL)
        self.resolution_spin.setEnabled(mode == RESOLUTION)
        latitude = self.centre_latitude()
        try:
            choice = self.resolution().choose(latitude)
            ground = scale.ground_resolution(choice.level, latitude or 0.0)
        except ValueError as exc:
            self.info_label.setText(str(exc))
            self.run_view.block(str(exc))
            self.show_examples(None)
            return
        self.current_level = choice.level
        # The fields the mode does not read show what it chose, never a stale 17 or 1.0 m.
        for spin, value in ((self.level_spin, choice.level), (self.resolution_spin, ground)):
            if not spin.isEnabled():
                spin.blockSignals(True)
                spin.setValue(value)
                spin.blockSignals(False)
        self.show_examples(choice.level)
        text = f"{choice.message} — {ground:.3g} m/px on the ground"
        if mode == AUTO and self.extent is not None:
            text += " (the map's zoom when the extent was set)"
        problem = ""
        if self.extent:
            r = self.extent
            unit = self.extent_crs.authid() or "custom CRS"
            digits = 6 if self.extent_crs.isGeographic() else 2
            where = (f"{r.xMinimum():.{digits}f}, {r.yMinimum():.{digits}f} : "
                     f"{r.xMaximum():.{digits}f}, {r.yMaximum():.{digits}f} ({unit})")
            size = self.extent_size_m()
            dims = f" — {size[0]:,.0f} x {size[1]:,.0f} m" if size else ""
            self.extent_label.setText(where + dims)
            planned = self.planned_size(choice.level, ground)
            if planned:
                check = check_size(*planned, choice.level, ground, self.max_pixels(),
                                   self.tile, self.overlap)
                self.planned = (check.width, check.height)
                problem = check.problem or ""
                if problem:
                    text += "\n" + problem
                else:
                    text += f"\n{check.width:,} x {check.height:,} px, " + (
                        "one model canvas" if check.windows == 1
                        else f"a scene of {check.windows} model windows")
        self.info_label.setText(text)
        self.run_view.block(problem)
        if problem and not self.run_view.running:
            self.status_label.setText(problem)
        elif not self.run_view.running and self.status_label.text().startswith("Too "):
            self.status_label.setText("")

    # ----- the job -----------------------------------------------------------------------

    def output_folder(self) -> Path:
        folder = self.folder_widget.filePath().strip()
        if folder:
            return Path(folder)
        return default_output_folder(QgsProject.instance().homePath(), documents_folder())

    def demo_weights(self) -> bool:
        """The engine serves its built-in demo checkpoint: results are pipeline checks."""
        models = (self.manager.health or {}).get("models") or []
        return any(m.get("pipeline_check") for m in models) or demo_expected(
            self.manager.settings)

    def build_job(self, seed: int | None = None, taken=frozenset()) -> tuple[dict, Path]:
        """(job, a destination no file and no name in ``taken`` has); ValueError for the user."""
        if self.extent is None:
            raise ValueError("choose an extent first: draw it, or use the canvas or a layer")
        if self.run_view.blocked_reason:
            raise ValueError(self.run_view.blocked_reason)
        form = self.form(seed)
        form.check()  # before anything is drawn
        name = output_name(self.pattern_edit.text() or DEFAULT_PATTERN, form.prompt, form.seed,
                           self.current_level)
        if self.demo_weights():
            name = pipeline_check_name(name)
        folder = check_output_folder(self.output_folder())  # before any work: named, with the fix
        name = unused_name(name, lambda n: n in taken or (folder / n).exists())
        destination = folder / name
        start = None
        if form.start_from_layers:
            self.status_label.setText("drawing the layers to start from…")
            start = str(self.render_start_image(destination))
        return form.to_job(self.dock.precision(), init_raster=start), destination

    def form(self, seed: int | None = None) -> GenerateForm:
        """The tab's settings (the one place they are read); ``seed`` instead of the shown."""
        if self.extent is None:
            raise ValueError("choose an extent first: draw it, or use the canvas or a layer")
        mode, r = self.mode_combo.currentData(), self.extent
        start = self.start_layers.active
        return GenerateForm(
            prompt=self.prompt_edit.toPlainText().strip(),
            bbox=(r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum()),
            crs=crs_for_engine(self.extent_crs),
            mode=mode,
            level=self.level_spin.value() if mode == LEVEL else None,
            metres_per_pixel=None if mode == LEVEL else self.resolution().metres_per_pixel,
            negative_prompt=self.negative_edit.text().strip(),
            seed=self.seed_spin.value() if seed is None else seed,
            steps=self.steps_spin.value(),
            guidance=self.guidance_spin.value(),
            scheduler=self.scheduler_combo.currentText(),
            tile=self.tile,
            overlap=self.overlap,
            scene_method=self.scene_combo.currentData(),
            model=self.model_edit.text().strip(),
            variations=self.variations_spin.value(),
            start_from_layers=start,
            strength=self.start_layers.strength if start else None,
        )

    def show_form(self, form: GenerateForm) -> None:
        """Fill the tab from ``form`` (the one place they are written): a reused run comes
        back as it was, its extent and its level included."""
        self.prompt_edit.setPlainText(form.prompt)
        self.negative_edit.setText(form.negative_prompt)
        if form.seed is not None:
            self.seed_spin.setValue(form.seed % (MAX_SEED + 1))
            self.seed_lock_check.setChecked(True)  # "these settings" include the seed
        self.steps_spin.setValue(form.steps)
        self.guidance_spin.setValue(form.guidance)
        self.scheduler_combo.setCurrentText(form.scheduler)
        self.tile, self.overlap = form.tile, form.overlap
        self.scene_combo.setCurrentIndex(max(0, self.scene_combo.findData(form.scene_method)))
        self.model_edit.setText(form.model)
        self.variations_spin.setValue(form.variations)
        self.start_layers.box.setChecked(form.start_from_layers)
        if form.strength is not None:
            self.start_layers.set_strength(form.strength)
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(form.mode))
        if form.mode == LEVEL:
            self.level_spin.setValue(form.level)
        elif form.mode == RESOLUTION:
            self.resolution_spin.setValue(form.metres_per_pixel)
        target = QgsCoordinateReferenceSystem(form.crs)
        if len(form.bbox) == 4 and target.isValid():
            auto = form.metres_per_pixel if form.mode == AUTO else None
            self.set_extent(QgsRectangle(*form.bbox), target, auto_metres=auto)
        self.update_info()

    def next_seed(self) -> int:
        if not self.seed_lock_check.isChecked():
            self.seed_spin.setValue(random.randint(0, MAX_SEED))  # noqa: S311 # nosec B311 - a seed, not a secret
        return self.seed_spin.value()

    def render_start_image(self, destination: Path) -> Path:
        """The ticked layers drawn for the extent at the output's size, beside the output."""
        width, height = getattr(self, "planned", None) or (0, 0)
        folder = destination.parent
        name = unused_name(init_image_name(destination.name), lambda n: (folder / n).exists())
        return render_layers_to_geotiff(self.start_layers.ticked_layers(), self.extent,
                                        self.extent_crs, width, height, folder / name)

    def generate(self) -> None:
        self.start(lambda: self.build_job(self.next_seed()))

    def new_task(self, job: dict, destination: Path) -> GenerateTask:
        """The run's task; variations are delivered under names of the tab's pattern."""
        self._remember_settings()
        self.strip.clear()
        paths_for = None
        if job.get("candidates", 1) > 1:
            folder, pattern = destination.parent, self.pattern_edit.text() or DEFAULT_PATTERN
            prompt, level = self.prompt_edit.toPlainText(), self.current_level

            def paths_for(candidates, pipeline_check):
                return candidate_paths(folder, pattern, prompt, level, candidates,
                                       pipeline_check or self.demo_weights())
        return GenerateTask(self.manager, job, str(destination), paths_for)

    def progress_prefix(self, job: dict) -> str:
        count = job.get("candidates", 1)
        return f"{count} variations: " if count > 1 else ""

    def run_ended(self, task: GenerateTask, layer) -> None:
        if layer is not None and task.problems:
            self.dock.show_message("Some variations could not be delivered: "
                                   + "; ".join(task.problems), warning=True)
        if layer is None and task.job.get("init_raster"):
            # Drawn for this run only: a cancelled or failed run leaves nothing behind.
            Path(task.job["init_raster"]).unlink(missing_ok=True)
        # The run is over: its outline would only hide the new layer's edge.
        self.outline_wanted = False
        self.hide_outline()

    def add_layer(self, task: GenerateTask):
        """The run's layer(s), history entries and, for variations, the strip; the best's
        layer (the one Before/after shows), or None when QGIS cannot open it."""
        if not task.delivered:
            layer = add_result_layer(task.path, task.job, task.result)
            if layer is not None:
                self.finished_run.emit(task.job, {**task.result, "path": task.path},
                                       self.run_view.last_preview)
                self.layer_added.emit(layer)
            return layer
        count, added = len(task.delivered), []
        # Added worst first, so the best ends on top of the group.
        for rank in range(count, 0, -1):
            candidate, path = task.delivered[rank - 1]
            result = candidate_result(task.result, candidate, path)
            job = candidate_job(task.job, candidate)
            layer = add_result_layer(str(path), job, result, variation=(rank, count))
            if layer is None:
                continue
            # Each variation's own picture in the history (the live preview shows one).
            self.finished_run.emit(job, result, thumbnail_png(layer))
            self.layer_added.emit(layer)
            added.insert(0, (layer, candidate, path))
        if not added:
            return None
        self.strip.show_variations(added)
        return added[0][0]

    # ----- settings, reuse -----------------------------------------------------------------

    def _remember_settings(self) -> None:
        settings = QgsSettings()
        settings.setValue(SETTINGS + "output_folder", self.folder_widget.filePath())
        settings.setValue(SETTINGS + "pattern", self.pattern_edit.text())
        settings.setValue(SETTINGS + "model", self.model_edit.text())
        settings.setValue(SETTINGS + "quality", self.quality_combo.currentText())

    def show_examples(self, level: int | None) -> None:
        """The examples written for ``level`` (the general ones where it has none)."""
        if level == self.examples_level:
            return
        self.examples_level = level
        self.examples.blockSignals(True)
        self.examples.clear()
        self.examples.addItem(EXAMPLES_TITLE)
        self.examples.addItems(examples_for(level))
        self.examples.blockSignals(False)

    def use_example(self, index: int) -> None:
        if index > 0:
            self.prompt_edit.setPlainText(self.examples.itemText(index))

    def load_job(self, job: dict) -> None:
        """Fill the form from a job (history 'reuse', or a layer's 'regenerate')."""
        if job.get("level") is None and job.get("scale") is not None:
            # A map-scale job (scripts may send them): pin the level it meant.
            bbox, crs = job.get("bbox") or [0, 0, 0, 0], job.get("crs", "")
            latitude = latitude_of(QgsRectangle(*bbox).center(),
                                   QgsCoordinateReferenceSystem(crs))
            job = {**job, "level": scale.level_for_scale(
                float(job["scale"]), latitude, float(job.get("dpi", scale.DEFAULT_DPI))).level}
        self.show_form(GenerateForm.from_job(job))

    def cleanup(self) -> None:
        super().cleanup()
        self.start_layers.cleanup()
        for signal in (self.canvas.scaleChanged, self.canvas.destinationCrsChanged):
            try:
                signal.disconnect(self.update_info)
            except (TypeError, RuntimeError):
                pass
        if self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)
        self.tool.deleteLater()  # the canvas owns it: it would outlive the plugin
        self.hide_outline()
        self.canvas.scene().removeItem(self.band)
