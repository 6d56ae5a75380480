"""What the headless QGIS probes share: waiting for a condition while Qt runs its events."""

from __future__ import annotations

import time

from qgis.PyQt.QtCore import QCoreApplication


def wait_for(condition=lambda: True, timeout: float = 90.0) -> bool:
    """Process events until ``condition()`` holds (True) or ``timeout`` s pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    return False
