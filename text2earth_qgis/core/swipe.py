"""The geometry of a before/after swipe on the map, in the canvas's pixels. Stdlib.

A vertical line splits the map: left of it the layers under the result ("before"), right of
it the map as it is, result included ("after"). The line is kept as a fraction of the map's
width, so it stays where the user left it when the canvas is resized.
"""

from __future__ import annotations

from dataclasses import dataclass

GRAB_PX = 6  # a press this close to the line picks it up (else the line jumps to the press)


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    width: int
    height: int

    @property
    def empty(self) -> bool:
        return self.width <= 0 or self.height <= 0


def clamp_fraction(fraction: float) -> float:
    """A line position inside the map (0: left edge, 1: right edge); NaN -> the middle."""
    if fraction != fraction:  # NaN
        return 0.5
    return min(1.0, max(0.0, float(fraction)))


def line_x(fraction: float, width: int) -> int:
    """The line's column in a map ``width`` pixels wide."""
    return round(clamp_fraction(fraction) * max(0, width))


def fraction_at(x: float, width: int) -> float:
    """The fraction a press or drag at column ``x`` puts the line at."""
    if width <= 0:
        return 0.5
    return clamp_fraction(x / width)


def before_rect(fraction: float, width: int, height: int) -> Rect:
    """The part of the map showing the layers under the result: left of the line."""
    return Rect(0, 0, line_x(fraction, width), max(0, height))


def after_rect(fraction: float, width: int, height: int) -> Rect:
    """The part showing the result: right of the line."""
    x = line_x(fraction, width)
    return Rect(x, 0, max(0, width) - x, max(0, height))


def near_line(x: float, fraction: float, width: int, grab_px: int = GRAB_PX) -> bool:
    return abs(x - line_x(fraction, width)) <= grab_px


def drag(fraction: float, press_x: float, move_x: float, width: int) -> float:
    """Where a drag from ``press_x`` to ``move_x`` leaves the line: it moves by the drag when
    the press picked up the line, else it follows the pointer."""
    if near_line(press_x, fraction, width):
        return fraction_at(line_x(fraction, width) + (move_x - press_x), width)
    return fraction_at(move_x, width)
