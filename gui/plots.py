"""What every plot in the window shares: PNG export, written atomically and never over a file
that is not a PNG image."""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg

EXPORT_WIDTH = 1200


def export_plot_png(plot: pg.PlotWidget, path: str | Path) -> Path:
    from pyqtgraph.exporters import ImageExporter

    from engine.io.files import write_png

    def save(tmp: Path) -> bool:
        exporter = ImageExporter(plot.plotItem)
        exporter.parameters()["width"] = EXPORT_WIDTH
        exporter.export(str(tmp))
        return True

    return write_png(path, save)
