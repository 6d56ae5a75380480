"""The Text2Earth dock: collects the request and shows state. Logic lives in core/."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDistanceArea,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsSettings,
)
from qgis.gui import (
    QgsCollapsibleGroupBox,
    QgsDockWidget,
    QgsFileWidget,
    QgsMapToolExtent,
    QgsRubberBand,
)
from qgis.PyQt.QtCore import QSize, pyqtSignal
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from . import sampling_widgets
from .core import history as history_store
from .core import scale
from .core.engine_manager import CONNECTED, CRASHED, EngineManager
from .core.job_spec import (
    AUTO,
    DEFAULT_PATTERN,
    LARGE_OUTPUT_PX,
    LEVEL,
    RESOLUTION,
    Extent,
    Resolution,
    build_job,
    output_name,
    output_size,
    window_count,
)
from .edit_panel import EDIT_TYPES, EditPanel
from .engine_tools import diagnostics_for, engine_tools_row
from .layers import add_result_layer
from .qgis_compat import crs_for_engine, polygon_geometry_type
from .run_view import RunView
from .sampling_widgets import MAX_SEED
from .tasks import EngineTask, GenerateTask

SETTINGS = "text2earth/"
HISTORY_SCOPE, HISTORY_KEY = "text2earth", "history"
WGS84 = "EPSG:4326"


def resource_path(name: str) -> Path:
    return Path(__file__).resolve().parent / "resources" / name


def example_prompts() -> list[str]:
    try:
        lines = resource_path("example_prompts.txt").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


class Text2EarthDock(QgsDockWidget):
    """Prompt + extent + resolution in, a georeferenced synthetic layer out."""

    layer_added = pyqtSignal(object)
    setup_requested = pyqtSignal()  # the plugin opens the set-up / model dialogs
    models_requested = pyqtSignal()

    def __init__(self, iface, manager: EngineManager, parent=None) -> None:
        super().__init__("Text2Earth", parent or iface.mainWindow())
        self.setObjectName("Text2EarthDock")
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.manager = manager
        self.extent: QgsRectangle | None = None
        self.extent_crs = QgsCoordinateReferenceSystem()
        self.task: GenerateTask | None = None
        self.engine_task: EngineTask | None = None
        self.history: list[history_store.HistoryEntry] = []
        self.tool = QgsMapToolExtent(self.canvas)
        self.tool.extentChanged.connect(self.set_extent_from_tool)
        self.band = QgsRubberBand(self.canvas, polygon_geometry_type())
        self.band.setColor(QColor(255, 140, 0, 200))
        self.band.setFillColor(QColor(255, 140, 0, 40))
        self.band.setWidth(2)
        self._build_ui()
        self.canvas.scaleChanged.connect(self.update_info)
        self.canvas.destinationCrsChanged.connect(self.update_info)
        QgsProject.instance().readProject.connect(self.load_history)
        QgsProject.instance().cleared.connect(self.load_history)
        self.load_history()
        self.update_info()
        self.show_engine_state()

    # ----- building the form -------------------------------------------------------------

    def _build_ui(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)
        settings = QgsSettings()

        self.engine_label = QLabel("Engine: not connected")
        self.engine_label.setWordWrap(True)
        self.connect_button = QPushButton("Connect")
        self.connect_button.clicked.connect(self.connect_engine)
        row = QHBoxLayout()
        row.addWidget(self.engine_label, 1)
        row.addWidget(self.connect_button)
        layout.addLayout(row)

        engine_box = QgsCollapsibleGroupBox("Engine settings")
        engine_box.setCollapsed(True)
        engine_form = QFormLayout(engine_box)
        self.python_widget = QgsFileWidget()
        self.python_widget.setFilePath(self.manager.settings.python or "")
        self.python_widget.setToolTip(
            "the Python of the engine's own virtual environment (never QGIS's); empty: "
            "found automatically in a development checkout")
        self.url_edit = QLineEdit(self.manager.settings.url or "")
        self.url_edit.setPlaceholderText("empty: start a local engine; or http://host:port")
        self.token_widget = QgsFileWidget()
        self.token_widget.setFilePath(self.manager.settings.token_file or "")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cuda", "cpu", "mps"])
        self.device_combo.setCurrentText(self.manager.settings.device or "auto")
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["auto", "fp32", "bf16", "fp16"])
        self.precision_combo.setCurrentText(
            settings.value(SETTINGS + "precision", "auto", type=str))
        self.precision_combo.setToolTip(
            "auto: fp16 on NVIDIA GPUs, bf16 on CPUs that run it natively, else fp32 (exact, "
            "slowest)")
        apply_button = QPushButton("Apply and reconnect")
        apply_button.clicked.connect(self.apply_engine_settings)
        engine_form.addRow("Engine Python", self.python_widget)
        engine_form.addRow("Engine URL", self.url_edit)
        engine_form.addRow("Token file", self.token_widget)
        engine_form.addRow("Device", self.device_combo)
        engine_form.addRow("Precision", self.precision_combo)
        self.port_spin = QSpinBox()
        self.port_spin.setRange(0, 65535)
        self.port_spin.setSpecialValueText("any free port")
        self.port_spin.setValue(self.manager.settings.port)
        engine_form.addRow("Port", self.port_spin)
        engine_form.addRow(apply_button)
        engine_form.addRow(engine_tools_row(self))
        layout.addWidget(engine_box)

        prompt_box = QGroupBox("Prompt")
        form = QFormLayout(prompt_box)
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("e.g. a river meanders through dense green forest")
        self.prompt_edit.setFixedHeight(60)
        self.examples = QComboBox()
        self.examples.addItem("Examples…")
        self.examples.addItems(example_prompts())
        self.examples.activated.connect(self.use_example)
        self.negative_edit = QLineEdit()
        self.negative_edit.setPlaceholderText("what to avoid, e.g. clouds, haze")
        form.addRow(self.prompt_edit)
        form.addRow("Examples", self.examples)
        form.addRow("Negative", self.negative_edit)
        layout.addWidget(prompt_box)

        extent_box = QGroupBox("Extent")
        extent_layout = QVBoxLayout(extent_box)
        buttons = QHBoxLayout()
        self.draw_button = QPushButton("Draw on map")
        self.draw_button.setCheckable(True)
        self.draw_button.toggled.connect(self.toggle_draw)
        self.square_check = QCheckBox("square")
        self.square_check.toggled.connect(self._square_changed)
        self.canvas_button = QPushButton("Canvas extent")
        self.canvas_button.clicked.connect(self.use_canvas_extent)
        self.layer_button = QPushButton("Layer extent")
        self.layer_button.clicked.connect(self.use_layer_extent)
        for widget in (self.draw_button, self.square_check, self.canvas_button,
                       self.layer_button):
            buttons.addWidget(widget)
        self.extent_label = QLabel("no extent yet")
        self.extent_label.setWordWrap(True)
        extent_layout.addLayout(buttons)
        extent_layout.addWidget(self.extent_label)
        layout.addWidget(extent_box)

        res_box = QGroupBox("Resolution")
        res_form = QFormLayout(res_box)
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
        res_form.addRow("Mode", self.mode_combo)
        res_form.addRow("Level", self.level_spin)
        res_form.addRow("Ground size", self.resolution_spin)
        res_form.addRow(self.info_label)
        layout.addWidget(res_box)

        gen_box = QGroupBox("Generation")
        gen_form = QFormLayout(gen_box)
        self.seed_spin, self.dice_button, seed_row = sampling_widgets.seed_row()
        self.steps_spin = sampling_widgets.steps_spin()
        self.guidance_spin = sampling_widgets.guidance_spin(4.0)
        self.scheduler_combo = QComboBox()
        self.scheduler_combo.addItems(["euler", "ddim", "dpm++"])
        self.model_edit = QLineEdit(settings.value(SETTINGS + "model", "", type=str))
        self.model_edit.setPlaceholderText("default (lcybuaa/Text2Earth)")
        gen_form.addRow("Seed", seed_row)
        gen_form.addRow("Steps", self.steps_spin)
        gen_form.addRow("Guidance", self.guidance_spin)
        gen_form.addRow("Scheduler", self.scheduler_combo)
        gen_form.addRow("Model", self.model_edit)
        layout.addWidget(gen_box)

        out_box = QGroupBox("Output")
        out_form = QFormLayout(out_box)
        self.folder_widget = QgsFileWidget()
        self.folder_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder_widget.setFilePath(settings.value(SETTINGS + "output_folder", "", type=str))
        self.pattern_edit = QLineEdit(
            settings.value(SETTINGS + "pattern", DEFAULT_PATTERN, type=str))
        out_form.addRow("Folder", self.folder_widget)
        out_form.addRow("File name", self.pattern_edit)
        layout.addWidget(out_box)

        self.run_view = RunView("Generate")
        self.generate_button = self.run_view.run_button
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button = self.run_view.cancel_button
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = self.run_view.progress
        self.status_label = self.run_view.status_label
        layout.addWidget(self.run_view)

        history_box = QGroupBox("History (this project)")
        history_layout = QVBoxLayout(history_box)
        self.history_list = QListWidget()
        self.history_list.setIconSize(QSize(48, 48))
        history_buttons = QHBoxLayout()
        self.reuse_button = QPushButton("Reuse settings")
        self.reuse_button.clicked.connect(self.reuse_selected)
        self.zoom_button = QPushButton("Zoom to")
        self.zoom_button.clicked.connect(self.zoom_to_selected)
        history_buttons.addWidget(self.reuse_button)
        history_buttons.addWidget(self.zoom_button)
        history_layout.addWidget(self.history_list)
        history_layout.addLayout(history_buttons)
        layout.addWidget(history_box)
        layout.addStretch(1)
        self.edit_panel = EditPanel(self)
        self.edit_panel.layer_added.connect(self.layer_added)
        self.tabs = QTabWidget()
        self.tabs.addTab(body, "Generate")
        self.tabs.addTab(self.edit_panel, "Edit raster")
        self.setWidget(self.tabs)

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
            self.show_message("Select a layer in the Layers panel first.", warning=True)
            return
        project_crs = self.canvas.mapSettings().destinationCrs()
        transform = QgsCoordinateTransform(layer.crs(), project_crs, QgsProject.instance())
        self.set_extent(transform.transformBoundingBox(layer.extent()), project_crs)

    def set_extent(self, rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> None:
        self.extent = QgsRectangle(rect)
        self.extent_crs = QgsCoordinateReferenceSystem(crs)
        self.band.setToGeometry(QgsGeometry.fromRect(self.extent), self.extent_crs)
        self.update_info()

    def centre_latitude(self) -> float | None:
        rect = self.extent or self.canvas.extent()
        crs = self.extent_crs if self.extent else self.canvas.mapSettings().destinationCrs()
        if rect.isEmpty():
            return None
        return self._latitude_of(rect.center(), crs)

    @staticmethod
    def _latitude_of(point, crs) -> float | None:
        if not crs.isValid():
            return None
        to_wgs84 = QgsCoordinateTransform(crs, QgsCoordinateReferenceSystem(WGS84),
                                          QgsProject.instance())
        try:
            return to_wgs84.transform(point).y()
        except Exception:  # noqa: BLE001 - a point outside the CRS's area: no latitude
            return None

    def extent_size_m(self) -> tuple[float, float] | None:
        if not self.extent or not self.extent_crs.isValid():
            return None
        area = QgsDistanceArea()
        area.setSourceCrs(self.extent_crs, QgsProject.instance().transformContext())
        area.setEllipsoid(QgsProject.instance().ellipsoid() or "WGS84")
        if not area.willUseEllipsoid():
            area.setEllipsoid("WGS84")
        r, c = self.extent, self.extent.center()
        width = area.measureLine(QgsPointXY(r.xMinimum(), c.y()), QgsPointXY(r.xMaximum(), c.y()))
        height = area.measureLine(QgsPointXY(c.x(), r.yMinimum()), QgsPointXY(c.x(), r.yMaximum()))
        return width, height

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
        # Rounded to the spin box's 4 decimals, so a reused job comes back identical.
        metres = round(self.screen_pixel_m(), 4) if mode == AUTO else self.resolution_spin.value()
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
            return
        text = f"{choice.message} — {ground:.3g} m/px on the ground"
        size = self.extent_size_m()
        if self.extent:
            r = self.extent
            unit = self.extent_crs.authid() or "custom CRS"
            digits = 6 if self.extent_crs.isGeographic() else 2
            where = (f"{r.xMinimum():.{digits}f}, {r.yMinimum():.{digits}f} : "
                     f"{r.xMaximum():.{digits}f}, {r.yMaximum():.{digits}f} ({unit})")
            dims = f" — {size[0]:,.0f} x {size[1]:,.0f} m" if size else ""
            self.extent_label.setText(where + dims)
        if size:
            width, height = output_size(size[0], size[1], ground)
            windows = window_count(width, height)
            text += f"\n{width:,} x {height:,} px, " + (
                "one model canvas" if windows == 1 else f"a scene of {windows} model windows")
            if width * height > LARGE_OUTPUT_PX:
                text += " — large: this will take a long time"
        self.info_label.setText(text)
        self.current_level = choice.level

    # ----- the job -----------------------------------------------------------------------

    def output_folder(self) -> Path:
        folder = self.folder_widget.filePath().strip()
        if folder:
            return Path(folder)
        home = QgsProject.instance().homePath()
        return Path(home) / "text2earth" if home else Path(tempfile.gettempdir()) / "text2earth"

    def build_job(self) -> tuple[dict, Path]:
        if self.extent is None:
            raise ValueError("choose an extent first: draw it, or use the canvas or a layer")
        crs = crs_for_engine(self.extent_crs)
        r = self.extent
        prompt = self.prompt_edit.toPlainText()
        job = build_job(
            Extent(r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum(), crs),
            prompt,
            self.resolution(),
            negative_prompt=self.negative_edit.text(),
            seed=self.seed_spin.value(),
            steps=self.steps_spin.value(),
            guidance=self.guidance_spin.value(),
            scheduler=self.scheduler_combo.currentText(),
            model=self.model_edit.text().strip() or None,
            precision=self.precision_combo.currentText(),
        )
        name = output_name(self.pattern_edit.text() or DEFAULT_PATTERN, prompt,
                           self.seed_spin.value(), getattr(self, "current_level", None))
        destination = self.output_folder() / name
        if destination.exists():
            raise ValueError(f"{destination} already exists: change the file name pattern "
                             "or the seed")
        return job, destination

    def generate(self) -> None:
        if self.task is not None:
            return
        try:
            job, destination = self.build_job()
        except ValueError as exc:
            self.show_message(str(exc), warning=True)
            return
        self._remember_settings()
        self.task = GenerateTask(self.manager, job, str(destination))
        self.run_view.follow(self.task)
        self.task.completed.connect(self.generation_finished)
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.run_view.cancelling()
            self.task.cancel()

    def generation_finished(self, ok: bool) -> None:
        task, self.task = self.task, None
        self.show_engine_state()
        if task is None:
            self.run_view.set_running(False)
            return
        layer = self.run_view.ended(
            task, ok, lambda t: add_result_layer(t.path, t.job, t.result),
            lambda text: self.show_message(text, warning=True), "the generation failed")
        if layer is not None:
            self.add_history(task.job, {**task.result, "path": task.path})
            self.layer_added.emit(layer)

    # ----- settings, reuse, history ------------------------------------------------------

    def _remember_settings(self) -> None:
        settings = QgsSettings()
        settings.setValue(SETTINGS + "output_folder", self.folder_widget.filePath())
        settings.setValue(SETTINGS + "pattern", self.pattern_edit.text())
        settings.setValue(SETTINGS + "model", self.model_edit.text())
        settings.setValue(SETTINGS + "precision", self.precision_combo.currentText())

    def use_example(self, index: int) -> None:
        if index > 0:
            self.prompt_edit.setPlainText(self.examples.itemText(index))

    def load_job(self, job: dict) -> None:
        """Fill the form from a job (history 'reuse', or a layer's 'regenerate')."""
        if job.get("type") in EDIT_TYPES:
            self.tabs.setCurrentWidget(self.edit_panel)
            self.edit_panel.load_job(job)
            return
        self.prompt_edit.setPlainText(job.get("prompt", ""))
        self.negative_edit.setText(job.get("negative_prompt") or "")
        if job.get("seed") is not None:
            self.seed_spin.setValue(int(job["seed"]) % (MAX_SEED + 1))
        self.steps_spin.setValue(int(job.get("steps", 50)))
        self.guidance_spin.setValue(float(job.get("guidance", 4.0)))
        self.scheduler_combo.setCurrentText(job.get("scheduler", "euler"))
        if job.get("level") is None and job.get("scale") is not None:
            # A map-scale job (scripts may send them): pin the level it meant.
            bbox, crs = job.get("bbox") or [0, 0, 0, 0], job.get("crs", "")
            latitude = self._latitude_of(QgsRectangle(*bbox).center(),
                                         QgsCoordinateReferenceSystem(crs))
            job = {**job, "level": scale.level_for_scale(
                float(job["scale"]), latitude, float(job.get("dpi", scale.DEFAULT_DPI))).level}
        if job.get("level") is not None:
            self.mode_combo.setCurrentIndex(self.mode_combo.findData(LEVEL))
            self.level_spin.setValue(int(job["level"]))
        elif job.get("resolution") is not None:
            self.mode_combo.setCurrentIndex(self.mode_combo.findData(RESOLUTION))
            self.resolution_spin.setValue(float(job["resolution"]))
        bbox, crs = job.get("bbox"), job.get("crs")
        if bbox and crs:
            target = QgsCoordinateReferenceSystem(crs)
            if target.isValid():
                self.set_extent(QgsRectangle(*bbox), target)

    def add_history(self, job: dict, result: dict, preview: bytes | None = None) -> None:
        preview = self.run_view.last_preview if preview is None else preview
        thumb = base64.b64encode(preview).decode() if preview else ""
        self.history.append(history_store.new_entry(job, result, thumb))
        QgsProject.instance().writeEntry(HISTORY_SCOPE, HISTORY_KEY,
                                         history_store.dumps(self.history))
        self._show_history()

    def load_history(self, *args) -> None:
        text, _ = QgsProject.instance().readEntry(HISTORY_SCOPE, HISTORY_KEY, "")
        self.history = history_store.loads(text)
        self._show_history()

    def _show_history(self) -> None:
        self.history_list.clear()
        for entry in reversed(self.history):
            item = QListWidgetItem(entry.label)
            if entry.thumbnail_png_b64:
                pixmap = QPixmap()
                if pixmap.loadFromData(base64.b64decode(entry.thumbnail_png_b64), "PNG"):
                    item.setIcon(QIcon(pixmap))
            self.history_list.addItem(item)

    def selected_entry(self):
        row = self.history_list.currentRow()
        return self.history[len(self.history) - 1 - row] if row >= 0 else None

    def reuse_selected(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            self.load_job(entry.job)

    def zoom_to_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None or len(entry.bbox) != 4:
            return
        crs = QgsCoordinateReferenceSystem(entry.crs)
        transform = QgsCoordinateTransform(crs, self.canvas.mapSettings().destinationCrs(),
                                           QgsProject.instance())
        self.canvas.setExtent(transform.transformBoundingBox(QgsRectangle(*entry.bbox)))
        self.canvas.refresh()

    # ----- engine ------------------------------------------------------------------------

    def apply_engine_settings(self) -> None:
        settings = QgsSettings()
        values = {
            "engine_python": self.python_widget.filePath().strip(),
            "engine_url": self.url_edit.text().strip(),
            "token_file": self.token_widget.filePath().strip(),
            "device": "" if self.device_combo.currentText() == "auto"
            else self.device_combo.currentText(),
        }
        for key, value in values.items():
            settings.setValue(SETTINGS + key, value)
        settings.setValue(SETTINGS + "port", self.port_spin.value())
        self.manager.stop()
        engine = self.manager.settings
        engine.port = self.port_spin.value()
        engine.python = values["engine_python"] or None
        engine.url = values["engine_url"] or None
        engine.token_file = values["token_file"] or engine.token_file
        engine.device = values["device"] or None
        self.connect_engine()

    def connect_engine(self) -> None:
        if self.engine_task is not None:
            return
        self.engine_label.setText("Engine: starting…")
        self.engine_task = EngineTask(self.manager)
        self.engine_task.done.connect(self._engine_done)
        QgsApplication.taskManager().addTask(self.engine_task)

    def _engine_done(self, ok: bool, error: str) -> None:
        self.engine_task = None
        self.show_engine_state()
        if not ok:
            log = self.manager.log_tail()
            self.show_message(error + (f"\n{log}" if log else ""), warning=True)

    def show_engine_state(self) -> None:
        state = self.manager.state
        self.engine_label.setText(f"Engine: {self.manager.message or state}")
        self.connect_button.setEnabled(state != CONNECTED)
        self.connect_button.setText("Restart" if state == CRASHED else "Connect")

    def copy_diagnostics(self) -> str:
        text = diagnostics_for(self.manager)
        QApplication.clipboard().setText(text)
        self.show_message("Diagnostics copied to the clipboard (the token is left out).")
        return text

    def show_message(self, text: str, warning: bool = False) -> None:
        from qgis.core import Qgis

        level = Qgis.MessageLevel.Warning if warning else Qgis.MessageLevel.Info
        self.iface.messageBar().pushMessage("Text2Earth", text, level=level, duration=10)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.band.reset(polygon_geometry_type())
        super().closeEvent(event)

    def cleanup(self) -> None:
        """Called by the plugin on unload: disconnect from project and canvas."""
        if self.task is not None:
            self.task.cancel()
        self.edit_panel.cleanup()
        for signal, slot in ((self.canvas.scaleChanged, self.update_info),
                             (self.canvas.destinationCrsChanged, self.update_info),
                             (QgsProject.instance().readProject, self.load_history),
                             (QgsProject.instance().cleared, self.load_history)):
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        if self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)
        self.band.reset(polygon_geometry_type())
        self.canvas.scene().removeItem(self.band)
