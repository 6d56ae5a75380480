"""The shape every tab of the dock shares: its form in a scroll area, the run row pinned
below it, so a 768 px screen still shows Generate / Run and Cancel whatever the form holds."""

from __future__ import annotations

from qgis.core import QgsSettings
from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QObject, Qt
from qgis.PyQt.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QScrollArea,
    QSlider,
    QVBoxLayout,
    QWidget,
)

WHEEL_SENSITIVE = (QComboBox, QAbstractSpinBox, QSlider)


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


class WheelToScroll(QObject):
    """The wheel over a combo box, spin box or slider of a scrolling form scrolls the form,
    unless the user clicked into that field first: scrolling never changes a value."""

    def __init__(self, scroll: QScrollArea) -> None:
        super().__init__(scroll)
        self.scroll = scroll

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.Type.Wheel or watched.hasFocus():
            return False
        QCoreApplication.sendEvent(self.scroll.verticalScrollBar(), event)
        return True


def guard_wheel(tab: QWidget) -> None:
    """Every value field of ``tab``'s scrolling form ignores the wheel unless focused."""
    guard = WheelToScroll(tab.scroll)
    for kind in WHEEL_SENSITIVE:
        for field in tab.scroll.widget().findChildren(kind):
            field.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # a wheel gives no focus
            field.installEventFilter(guard)


def finish_form(tab: QWidget) -> None:
    """The last step of building a tab laid out by ``scrolled_form``: its width, and the
    wheel that scrolls the form instead of changing the field under the pointer."""
    fit_width(tab)
    guard_wheel(tab)
