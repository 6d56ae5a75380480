"""The shape every tab of the dock shares: its form in a scroll area, the run row pinned
below it, so a 768 px screen still shows Generate / Run and Cancel whatever the form holds."""

from __future__ import annotations

from qgis.core import QgsSettings
from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QComboBox, QFormLayout, QFrame, QScrollArea, QVBoxLayout, QWidget


def scrolled_form(tab: QWidget, pinned: QWidget) -> QVBoxLayout:
    """Lay ``tab`` out as [scrolling form] over [pinned]; returns the form's layout."""
    outer = QVBoxLayout(tab)
    outer.setContentsMargins(4, 4, 4, 4)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    body = QWidget()
    form = QVBoxLayout(body)
    form.setContentsMargins(0, 0, 4, 0)
    scroll.setWidget(body)
    outer.addWidget(scroll, 1)
    outer.addWidget(pinned)
    tab.scroll = scroll
    return form


def wrapping_form(parent: QWidget | None = None) -> QFormLayout:
    """A form whose labels go above their fields when the dock is narrow."""
    form = QFormLayout(parent) if parent is not None else QFormLayout()
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    return form


def narrow(*combos) -> None:
    """Combo boxes sized by a short text, not their longest item: the dock stays narrow."""
    for combo in combos:
        combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(10)


def remembered_section(title: str, key: str, collapsed: bool = True) -> QgsCollapsibleGroupBox:
    """A collapsible section that opens as the user last left it (QgsSettings ``key``)."""
    box = QgsCollapsibleGroupBox(title)
    settings = QgsSettings()
    box.setCollapsed(settings.value(key, collapsed, type=bool))
    box.collapsedStateChanged.connect(lambda state: QgsSettings().setValue(key, bool(state)))
    return box


def fit_width(tab: QWidget) -> None:
    """No horizontal scrolling: the form is never narrower than its content needs."""
    scroll = tab.scroll
    bar = scroll.verticalScrollBar().sizeHint().width()
    scroll.setMinimumWidth(scroll.widget().minimumSizeHint().width() + bar)
