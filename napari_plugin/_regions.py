"""The "Regions" panel: draw regions on the slide (or import QuPath annotations) and read what the
model predicts inside them.

It owns one Shapes layer, ``regions``: each shape has a name (shapes with the same name form one
region, as a QuPath MultiPolygon does) and its edge colour. The statistics are
:mod:`histoviz.viz.regions`': per region the patch-averaged value of the shown map with a 95 %
bootstrap interval over patches, the difference between two regions with its interval, and the
full table of every map for export (CSV), with the shapes (QuPath GeoJSON, level-0 pixels).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from napari_plugin._layers import META_KEY, ROLE_REGIONS
from napari_plugin._session import Session, reports_errors

__all__ = ["RegionPanel"]

_COLOURS = ("#ffd400", "#00e5ff", "#ff4fd8", "#7CFC00", "#ff8c00", "#a0a0ff")


class RegionPanel(QGroupBox):
    """Regions drawn on the slide and their statistics (see the module docstring).

    Attributes
    ----------
    table
        The last :func:`~histoviz.viz.regions.region_table` of the shown map.
    comparison
        The last :func:`~histoviz.viz.regions.compare_regions` (``None`` before one).
    """

    def __init__(self, session: Session, maps: Any) -> None:
        super().__init__("Regions (draw, or import from QuPath)")
        self.session = session
        self.maps = maps
        self.viewer = session.viewer
        self.layer: Any = None
        self.table: Any = None
        self.comparison: Any = None
        self._holes: dict[str, list[np.ndarray]] = {}
        self._class_colour: dict[str, str] = {}
        v = QVBoxLayout(self)
        row = QHBoxLayout()
        self.btn_draw = QPushButton("Draw region")
        self.btn_draw.setToolTip("Draw a polygon on the slide (click the corners, double-click to close); "
                                 "shapes with the same name form one region")
        self.btn_draw.clicked.connect(self.start_drawing)
        self.btn_import = QPushButton("Import QuPath…")
        self.btn_import.setToolTip("Polygon annotations exported from QuPath (GeoJSON, level-0 pixels)")
        self.btn_import.clicked.connect(self._choose_import)
        row.addWidget(self.btn_draw)
        row.addWidget(self.btn_import)
        v.addLayout(row)
        self.map_label = QLabel("")
        self.map_label.setWordWrap(True)
        v.addWidget(self.map_label)
        self.grid = QTableWidget(0, 3)
        self.grid.setHorizontalHeaderLabels(["Region", "Patches", "Mean [95% CI]"])
        head = self.grid.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        head.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        head.setSectionResizeMode(2, QHeaderView.Stretch)
        self.grid.verticalHeader().setVisible(False)
        self.grid.setEditTriggers(QAbstractItemView.DoubleClicked)
        self.grid.itemChanged.connect(self._on_renamed)
        self.grid.setMaximumHeight(150)
        v.addWidget(self.grid)
        row = QHBoxLayout()
        self.combo_a = QComboBox()
        self.combo_a.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo_a.setMinimumContentsLength(10)
        self.combo_b = QComboBox()
        self.combo_b.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo_b.setMinimumContentsLength(10)
        self.btn_compare = QPushButton("A − B")
        self.btn_compare.setToolTip("Difference of the two regions' means, 95% bootstrap interval over patches")
        self.btn_compare.clicked.connect(lambda: self.compare())
        row.addWidget(self.combo_a, 1)
        row.addWidget(QLabel("−"))
        row.addWidget(self.combo_b, 1)
        row.addWidget(self.btn_compare)
        v.addLayout(row)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        v.addWidget(self.result)
        row = QHBoxLayout()
        self.btn_csv = QPushButton("Table (CSV)…")
        self.btn_csv.setToolTip("Every map's region means with intervals (and the last comparison)")
        self.btn_csv.clicked.connect(self._choose_csv)
        self.btn_geojson = QPushButton("Shapes (GeoJSON)…")
        self.btn_geojson.setToolTip("The regions as QuPath annotations")
        self.btn_geojson.clicked.connect(self._choose_geojson)
        row.addWidget(self.btn_csv)
        row.addWidget(self.btn_geojson)
        v.addLayout(row)
        maps.shown.connect(lambda _mv: self.update_table())
        session.changed.connect(self._on_changed)
        session.moved.connect(self._on_moved)
        session.on_layers("removed", self._on_removed)
        self.set_enabled()

    def set_enabled(self) -> None:
        """Buttons that need predictions or regions."""
        has = self.session.adata is not None
        n = len(self.region_names())
        self.btn_draw.setEnabled(has)
        self.btn_import.setEnabled(has)
        self.btn_compare.setEnabled(has and n >= 2)
        self.btn_csv.setEnabled(has and n >= 1)
        self.btn_geojson.setEnabled(n >= 1)

    # ---- the shapes layer ------------------------------------------------------------------------
    def _regions_layer(self, create: bool = False) -> Any:
        if self.layer is not None and self.layer in self.viewer.layers:
            return self.layer
        self.layer = None
        if not create:
            return None
        scale, translate = self.session.geometry()
        kw: dict[str, Any] = {}
        info = self.session.info
        if info is not None and info.units:
            kw["units"] = info.units
        width = max(2.0, (self.session.layout.tile_size_level0 if self.session.layout else 224) * 0.06)
        layer = self.viewer.add_shapes(
            None, ndim=2, name="regions", scale=scale, translate=translate, edge_width=width,
            face_color="transparent", edge_color=_COLOURS[0], features={"name": np.array([], dtype=object)},
            text={"string": "{name}", "color": "white", "size": 11, "anchor": "upper_left"},
            metadata={META_KEY: {"role": ROLE_REGIONS, "owner": self.session.owner}}, **kw,
        )
        layer.events.data.connect(self._on_data)
        self.layer = layer
        return layer

    def start_drawing(self) -> None:
        """Make the regions layer active in polygon mode (the next polygon drawn is a region)."""
        if self.session.adata is None:
            self.session.say("Load predictions first.", error=True)
            return
        layer = self._regions_layer(create=True)
        self.viewer.layers.selection.active = layer
        layer.mode = "add_polygon"
        self.session.say("Draw a polygon on the slide: click its corners, double-click to close it.")

    def _on_data(self, event: Any = None) -> None:
        action = str(getattr(event, "action", "added"))
        if action.endswith("ing"):  # adding / changing / removing: wait for the end
            return
        layer = self.layer
        if layer is None:
            return
        names = list(layer.features["name"]) if "name" in layer.features else []
        fixed = False
        used = {str(n) for n in names if isinstance(n, str) and n}
        for i, n in enumerate(names):
            if not isinstance(n, str) or not n or n == "nan":
                k = 1
                while f"region {k}" in used:
                    k += 1
                names[i] = f"region {k}"
                used.add(names[i])
                fixed = True
        if fixed:
            layer.features = {"name": np.asarray(names, dtype=object)}
            layer.refresh_text()
        self.update_table()

    def _recolour(self) -> None:
        """One edge colour per region (shapes of one region share it), in first-drawn order;
        imported regions keep their QuPath class colour."""
        layer = self._regions_layer()
        if layer is None or not len(layer.data):
            return
        order = self.region_names()
        cols = [self._class_colour.get(str(n)) or _COLOURS[order.index(str(n)) % len(_COLOURS)]
                for n in layer.features["name"]]
        layer.edge_color = cols

    def _on_removed(self, event: Any = None) -> None:
        if getattr(event, "value", None) is self.layer and self.layer is not None:
            self.layer = None
            self._holes.clear()
            with contextlib.suppress(RuntimeError):
                self.update_table()

    def _on_changed(self) -> None:
        self.comparison = None
        with contextlib.suppress(RuntimeError):
            self.result.setText("")
            self.update_table()

    def _on_moved(self) -> None:
        layer = self._regions_layer()
        if layer is not None:
            scale, translate = self.session.geometry()
            layer.scale, layer.translate = scale, translate
            self.update_table()

    # ---- regions ---------------------------------------------------------------------------------
    def region_names(self) -> list[str]:
        """Names of the regions drawn, in first-drawn order."""
        layer = self._regions_layer()
        if layer is None or "name" not in layer.features:
            return []
        return list(dict.fromkeys(str(n) for n in layer.features["name"]))

    def regions(self) -> list[Any]:
        """The drawn regions as :class:`~histoviz.viz.regions.Region` (level-0 pixels)."""
        from matplotlib.path import Path as MplPath

        from histoviz.viz.layout import world_to_level0
        from histoviz.viz.regions import Region

        layer = self._regions_layer()
        if layer is None:
            return []
        scale, translate = self.session.geometry()
        parts: dict[str, list[tuple[np.ndarray, ...]]] = {}
        for data, stype, name in zip(layer.data, layer.shape_type, layer.features["name"]):
            pts = np.asarray(data, dtype=np.float64)[:, -2:]
            if stype == "ellipse":
                pts = _ellipse(pts)
            elif stype in ("line", "path") or len(pts) < 3:
                continue
            world = np.array([layer.data_to_world(p) for p in pts])
            ring = np.array([world_to_level0(w, scale, translate) for w in world])
            holes = tuple(h for h in self._holes.get(str(name), []) if MplPath(ring).contains_points(h[:1]).all())
            parts.setdefault(str(name), []).append((ring, *holes))
        return [Region(n, tuple(p)) for n, p in parts.items()]

    @reports_errors("Could not import the annotations", default=0)
    def import_geojson(self, path: str | Path) -> int:
        """Add QuPath polygon annotations as regions; returns how many."""
        from histoviz.viz.layout import level0_to_world
        from histoviz.viz.regions import read_qupath_geojson

        if self.session.adata is None:
            self.session.say("Load predictions first.", error=True)
            return 0
        regs = read_qupath_geojson(path)
        layer = self._regions_layer(create=True)
        scale, translate = self.session.geometry()
        shapes, names, colours = [], [], []
        for reg in regs:
            for rings in reg.polygons:
                world = np.array([level0_to_world(p, scale, translate) for p in rings[0]])
                shapes.append(np.array([layer.world_to_data(w) for w in world])[:, -2:])
                names.append(reg.name)
                colours.append("#{:02x}{:02x}{:02x}".format(*reg.color) if reg.color else _COLOURS[len(set(names)) % len(_COLOURS)])
                if reg.color:
                    self._class_colour[reg.name] = colours[-1]
                self._holes.setdefault(reg.name, []).extend(rings[1:])
        feats = list(layer.features["name"]) if len(layer.data) else []
        layer.events.data.disconnect(self._on_data)
        try:
            layer.add_polygons(shapes, edge_color=colours)
            layer.features = {"name": np.asarray(feats + names, dtype=object)}
            layer.refresh_text()
        finally:
            layer.events.data.connect(self._on_data)
        self.update_table()
        self.session.say(f"Imported {len(regs)} region(s) ({len(shapes)} polygon(s)) from {Path(path).name}.")
        return len(regs)

    def _choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import QuPath annotations", "", "GeoJSON (*.geojson *.json)")
        if path:
            self.import_geojson(path)

    def _on_renamed(self, item: QTableWidgetItem) -> None:
        layer = self._regions_layer()
        if item.column() != 0 or layer is None:
            return
        old = item.data(Qt.UserRole)
        new = item.text().strip()
        if not old or not new or new == old:
            return
        names = [new if str(n) == old else str(n) for n in layer.features["name"]]
        layer.features = {"name": np.asarray(names, dtype=object)}
        if old in self._holes:
            self._holes[new] = self._holes.pop(old)
        layer.refresh_text()
        self.update_table()

    # ---- statistics ------------------------------------------------------------------------------
    def update_table(self) -> None:
        """Region means of the shown map with their intervals (the table in the panel)."""
        from histoviz.viz.regions import region_table

        names = self.region_names()
        mv = self.maps.current
        self.table = None
        rows: list[tuple[str, str, str]] = []
        if names and mv is not None and self.session.adata is not None and not mv.categorical:
            try:
                self.table = region_table(self.session.maps, self.regions(), maps=[str(mv.spec)])
            except Exception as e:  # noqa: BLE001 - a statistic must not break drawing
                self.session.say(f"Region statistics failed ({type(e).__name__}: {e}).", error=True)
            if self.table is not None:
                for r in self.table.itertuples(index=False):
                    ci = (f"{r.mean:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]" if r.n_patches else "no patch inside")
                    rows.append((r.region, str(r.n_patches), ci))
        else:
            rows = [(n, "", "show a value map" if mv is not None and mv.categorical else "") for n in names]
        self.grid.blockSignals(True)
        self.grid.setRowCount(len(rows))
        for i, (n, k, ci) in enumerate(rows):
            item = QTableWidgetItem(n)
            item.setData(Qt.UserRole, n)
            self.grid.setItem(i, 0, item)
            for j, text in ((1, k), (2, ci)):
                it = QTableWidgetItem(text)
                it.setFlags(it.flags() & ~Qt.ItemIsEditable)
                self.grid.setItem(i, j, it)
        unit = f" ({mv.unit})" if mv is not None and mv.unit else ""
        self.map_label.setText(f"Shown map: {mv.label}{unit}; mean over the patches inside, 95% bootstrap interval"
                               if mv is not None and names else "")
        self.grid.blockSignals(False)
        for combo, pick in ((self.combo_a, 0), (self.combo_b, 1)):
            cur = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if cur in names:
                combo.setCurrentText(cur)
            elif len(names) > pick:
                combo.setCurrentIndex(pick)
            combo.blockSignals(False)
        if len(names) >= 2 and self.combo_a.currentText() == self.combo_b.currentText():
            self.combo_b.setCurrentText(next(n for n in names if n != self.combo_a.currentText()))
        self._recolour()
        self.set_enabled()

    @reports_errors("Could not compare the regions", default=None)
    def compare(self, a: str | None = None, b: str | None = None) -> Any:
        """Difference of two regions' means of the shown map (``a - b``), with its 95 % bootstrap
        interval over patches; returns the one-row :func:`compare_regions` table."""
        from histoviz.viz.regions import compare_regions

        a = a or self.combo_a.currentText()
        b = b or self.combo_b.currentText()
        mv = self.maps.current
        if mv is None or mv.categorical:
            self.session.say("Show a value map (not categories) to compare regions.", error=True)
            return None
        if not a or not b or a == b:
            self.session.say("Choose two different regions.", error=True)
            return None
        regs = {r.name: r for r in self.regions()}
        c = compare_regions(self.session.maps, regs[a], regs[b], maps=[str(mv.spec)])
        self.comparison = c
        r = c.iloc[0]
        verdict = "the interval excludes 0" if r.excludes_zero else "the interval includes 0: no clear difference"
        unit = f" {mv.unit}" if mv.unit else ""
        self.result.setText(f"{mv.label}: {a} − {b} = {r.difference:+.3g}{unit}, 95% CI [{r.ci_low:+.3g}, "
                            f"{r.ci_high:+.3g}] ({int(r.n_a)} vs {int(r.n_b)} patches; {verdict}; bootstrap over "
                            "patches, which are spatially correlated)")
        self.session.say(f"Compared {a} and {b} on {mv.label}.")
        return c

    @reports_errors("Could not export the region table", default=None)
    def export_csv(self, path: str | Path) -> Path | None:
        """Every continuous map's region means with intervals (and the last comparison, beside
        it as ``<name>_comparison.csv``)."""
        from histoviz.viz.regions import region_table, write_region_table

        regs = self.regions()
        if not regs or self.session.adata is None:
            self.session.say("Draw or import a region first.", error=True)
            return None
        out = write_region_table(region_table(self.session.maps, regs), path)
        extra = ""
        if self.comparison is not None:
            p = Path(path)
            cmp_path = write_region_table(self.comparison, p.with_name(f"{p.stem}_comparison{p.suffix or '.csv'}"))
            extra = f" and the comparison to {cmp_path.name}"
        self.session.say(f"Wrote the region table ({len(regs)} regions) to {out}{extra}.")
        return out

    @reports_errors("Could not export the regions", default=None)
    def export_geojson(self, path: str | Path) -> Path | None:
        """The regions as QuPath annotations (GeoJSON, level-0 pixels)."""
        from histoviz.viz.regions import write_qupath_geojson

        regs = self.regions()
        if not regs:
            self.session.say("Draw or import a region first.", error=True)
            return None
        out = write_qupath_geojson(regs, path)
        self.session.say(f"Wrote {len(regs)} region(s) to {out} (QuPath: File > Import objects).")
        return out

    def _choose_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Region table", "regions.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def _choose_geojson(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Regions as QuPath annotations", "regions.geojson",
                                              "GeoJSON (*.geojson)")
        if path:
            self.export_geojson(path)


def _ellipse(box: np.ndarray, n: int = 64) -> np.ndarray:
    """A polygon of ``n`` points on the ellipse inscribed in napari's 4-corner ellipse box."""
    c = box.mean(axis=0)
    a = (box[1] - box[0]) / 2.0
    b = (box[3] - box[0]) / 2.0
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)[:, None]
    return c + np.cos(t) * a + np.sin(t) * b
