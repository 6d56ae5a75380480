"""The seed, steps and guidance inputs the Generate and Edit tabs share."""

from __future__ import annotations

import random

from qgis.PyQt.QtWidgets import QDoubleSpinBox, QHBoxLayout, QPushButton, QSpinBox

MAX_SEED = 2**31 - 1  # QSpinBox holds int32; the engine accepts up to 2**32 - 1


def seed_row() -> tuple[QSpinBox, QPushButton, QHBoxLayout]:
    """A seed box with a random starting value and a button for a new one."""
    spin = QSpinBox()
    spin.setRange(0, MAX_SEED)
    spin.setValue(random.randint(0, MAX_SEED))  # nosec B311 - a seed, not a secret
    dice = QPushButton("Random")
    dice.setToolTip("new random seed")
    dice.clicked.connect(lambda: spin.setValue(
        random.randint(0, MAX_SEED)))  # nosec B311 - a seed, not a secret
    row = QHBoxLayout()
    row.addWidget(spin, 1)
    row.addWidget(dice)
    return spin, dice, row


def steps_spin(value: int = 50) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(1, 1000)
    spin.setValue(value)
    return spin


def guidance_spin(value: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0.0, 50.0)
    spin.setSingleStep(0.5)
    spin.setValue(value)
    return spin
