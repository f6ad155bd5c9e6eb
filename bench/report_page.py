"""The HTML report page: the verdict and tables, figures, then one section per category.

A category section shows the generators side by side on the SAME real test images (every
generator of a comparison is scored on the same held-out split), worst cases first: the normal
images the detectors scored highest (false alarms), then the anomalies they scored lowest
(misses). The badness of an image is its mean over generators of its score's rank within that
generator's run, so runs whose scores sit on other scales weigh the same. Each tile is the
detector's map over the image with a colour bar for its scale, and a caption with the score,
the label and the defect type; the ground truth is outlined just OUTSIDE the defect (a contour
of the mask dilated by 2 px), so a thin scratch stays visible under its outline.

Maps come from ``RUN/maps-<protocol>.npz`` (written by the evaluator, read through
:mod:`anobench.perimage`) where it exists, else the run's selected checkpoint is run again on
the few images shown (the same weights and smoothing, so the same maps).

Figures: every ``*.png`` / ``*.svg`` in ``figures/`` beside the report file (the statistics
module writes its critical-difference and interval plots there) is embedded as it is.
"""

from __future__ import annotations

import base64
import csv
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anobench.errors import AnobenchError
from anobench.report_tables import Table
from anobench.report_writers import _cell_text
from anobench.records import RunRecord
from anobench.results import find_results_files

FIGURE_DIR = "figures"
OUTLINE = (0, 255, 255)  # cyan: visible on the jet map's reds and blues alike
TILE = 176  # px on the page


@dataclass
class Shown:
    """One test image as a generator's detector saw it."""

    generator: str
    score: float
    rank: int  # 1 = highest score of the run's test set
    tile: np.ndarray | None  # map over the image, ground truth outlined; None when no map is found


@dataclass
class TestImage:
    name: str
    label: int
    defect_type: str
    image: np.ndarray | None
    shown: list[Shown] = field(default_factory=list)


@dataclass
class CategorySection:
    dataset: str
    category: str
    protocol: str
    n_test: int
    generators: list[str]
    false_alarms: list[TestImage]
    misses: list[TestImage]


# --------------------------------------------------------------------------- gathering

def _scores(run_dir: Path, protocol: str) -> list[dict[str, str]]:
    try:
        with open(run_dir / f"scores-{protocol}.csv", newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError:
        return []


def _stored_maps(run_dir: Path, protocol: str) -> dict[str, np.ndarray]:
    """name -> map from the evaluator's per-image file, when it and its reader exist."""
    path = run_dir / f"maps-{protocol}.npz"
    if not path.is_file():
        return {}
    try:
        from anobench import perimage

        record = perimage.load(path)
        if not record.has_maps:
            return {}
        maps = record.maps()
        return {name: maps[i] for i, name in enumerate(record.names)}
    except Exception:  # noqa: BLE001 - fall back to recomputing the few maps shown
        return {}


def _recomputed_maps(run_dir: Path, images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        from anobench.detectors.predict import predict_images
        from anobench.detectors.run import TrainedRun

        run = TrainedRun.open(run_dir)
        names = list(images)
        maps, _ = predict_images(run.load_model(), [images[n] for n in names], map_sigma=run.config.map_sigma)
    except Exception:  # noqa: BLE001 - a page without this run's maps is still a page
        return {}
    return dict(zip(names, maps))


def _colour(amap: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.applyColorMap(np.clip(amap * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]


def outline_outside(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = OUTLINE,
                    gap: int = 2) -> np.ndarray:
    """``image`` with the boundary of ``mask`` dilated by ``gap`` px drawn in ``color``: the defect's
    own pixels are never covered."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    if not mask.any():
        return out
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * gap + 1, 2 * gap + 1), np.uint8))
    contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, 1)
    out[mask.astype(bool)] = image[mask.astype(bool)]  # belt and braces: the defect stays as it is
    return out


def _overlay(image: np.ndarray, amap: np.ndarray, mask: np.ndarray) -> np.ndarray:
    blended = (0.5 * image + 0.5 * _colour(amap)).astype(np.uint8)
    return outline_outside(blended, mask)


def _badness(rows: list[dict[str, str]]) -> dict[str, float]:
    """Per image in [0, 1]: a normal's score rank from the bottom, an anomaly's from the top."""
    scores = np.array([float(r["score"]) for r in rows])
    order = scores.argsort(kind="stable").argsort(kind="stable")  # 0 = lowest score
    n = max(len(rows) - 1, 1)
    out = {}
    for r, position in zip(rows, order):
        high = position / n
        out[r["image"]] = high if str(r["label"]).strip() in ("0", "False", "false") else 1.0 - high
    return out


def category_sections(results: Sequence[str | os.PathLike], images: int = 8) -> list[CategorySection]:
    """The worst test images of each (dataset, category, protocol), as every generator saw them."""
    runs: dict[tuple[str, str, str], dict[str, tuple[Path, dict]]] = {}
    for entry in results:
        try:
            files = find_results_files(entry)
        except Exception:  # noqa: BLE001 - read_results already named bad paths
            continue
        for path in files:
            run_dir = path.parent
            try:
                meta = RunRecord.read(run_dir).to_dict()
            except AnobenchError:
                continue
            for scores_file in sorted(run_dir.glob("scores-*.csv")):
                protocol = scores_file.name[len("scores-"):-len(".csv")]
                key = (str(meta.get("dataset")), str(meta.get("category")), protocol)
                generator = str(meta.get("generator"))
                seed = int(meta.get("seed", 0))
                current = runs.setdefault(key, {}).get(generator)
                if current is None or seed < int(current[1].get("seed", 0)):  # one run per generator: lowest seed
                    runs[key][generator] = (run_dir, meta)
    sections = []
    for (dataset, category, protocol), by_generator in sorted(runs.items()):
        sections.append(_section(dataset, category, protocol, by_generator, images))
    return sections


def _section(dataset: str, category: str, protocol: str, by_generator: dict[str, tuple[Path, dict]],
             images: int) -> CategorySection:
    generators = sorted(by_generator)
    scores = {g: _scores(by_generator[g][0], protocol) for g in generators}
    common = set.intersection(*[{r["image"] for r in rows} for rows in scores.values()]) if scores else set()
    badness = {g: _badness([r for r in scores[g] if r["image"] in common]) for g in generators}
    first = {r["image"]: r for r in scores[generators[0]]} if generators else {}
    mean_bad = {name: float(np.mean([badness[g][name] for g in generators])) for name in common}
    normals = sorted((n for n in common if str(first[n]["label"]).strip() in ("0", "False", "false")),
                     key=lambda n: (-mean_bad[n], n))
    anomalies = sorted((n for n in common if n not in set(normals)), key=lambda n: (-mean_bad[n], n))
    n_normal = min(len(normals), max(images // 2, 1 if images else 0))
    chosen_n = normals[:n_normal]
    chosen_a = anomalies[:max(images - n_normal, 0)]
    chosen = chosen_n + chosen_a
    pixels = _test_pixels(*by_generator[generators[0]], chosen) if generators else {}
    entries = {n: TestImage(n, int(str(first[n]["label"]).strip() in ("1", "True", "true")),
                            first[n].get("defect_type", ""), pixels.get(n, (None, None))[0]) for n in chosen}
    for g in generators:
        run_dir, meta = by_generator[g]
        size = int((meta.get("config") or {}).get("image_size", 256))
        ranked = sorted(scores[g], key=lambda r: -float(r["score"]))
        rank = {r["image"]: i + 1 for i, r in enumerate(ranked)}
        by_name = {r["image"]: float(r["score"]) for r in scores[g]}
        maps = _stored_maps(run_dir, protocol)
        missing = {n: _resized(pixels[n][0], size) for n in chosen if n not in maps and n in pixels}
        if missing:
            maps.update(_recomputed_maps(run_dir, missing))
        for n in chosen:
            tile = None
            if n in maps and n in pixels:
                amap = np.asarray(maps[n], dtype=np.float32)
                h = amap.shape[-1]
                tile = _overlay(_resized(pixels[n][0], h), amap, _resized_mask(pixels[n][1], h))
            entries[n].shown.append(Shown(g, by_name[n], rank[n], tile))
    n_test = len(common)
    return CategorySection(dataset, category, protocol, n_test, generators,
                           [entries[n] for n in chosen_n], [entries[n] for n in chosen_a])


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def _resized_mask(mask: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if mask.shape[0] == size:
        return mask
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)


def _test_pixels(run_dir: Path, meta: dict, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (image, mask) at the run's size, read from the real dataset the run names."""
    try:
        from anobench.artifacts import resolve_stored_path
        from anobench.datasets import load_category

        root = resolve_stored_path(run_dir, meta, "data_root")
        data = load_category(meta["dataset"], root, meta["category"])
    except Exception:  # noqa: BLE001 - data moved: the page shows scores without pictures
        return {}
    size = int((meta.get("config") or {}).get("image_size", 256))
    wanted = set(names)
    out = {}
    for sample in data.test:
        name = data.relpath(sample.path)
        if name in wanted:
            try:
                out[name] = sample.image_and_mask(size)
            except Exception:  # noqa: BLE001
                continue
    return out


def figure_files(out: str | os.PathLike | None) -> list[Path]:
    """Figure files beside the report: ``figures/*.png|svg`` in the report's folder."""
    if out is None:
        return []
    folder = Path(out).parent / FIGURE_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".svg") and p.is_file())


def page_parts(results: Sequence[str | os.PathLike], images: int = 8,
               out: str | os.PathLike | None = None) -> dict[str, Any]:
    """What :func:`html_page` needs beyond the tables: category sections and figure files."""
    return {"sections": category_sections(results, images), "figures": figure_files(out)}


# --------------------------------------------------------------------------- writing

_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1800px}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #222;padding-bottom:.2em;margin-top:2em}
#tables{display:flex;flex-wrap:wrap;gap:0 2.5em;align-items:flex-start}
.table-wrap{overflow-x:auto;max-width:100%;margin:.8em 0}.table-wrap .note{max-width:60em}
table{border-collapse:collapse;font-size:.9em}caption{font-weight:600;text-align:left;padding:.4em 0}
th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:center;white-space:nowrap}th{text-align:left}
thead th{border-bottom:2px solid #222;white-space:normal;max-width:9em;vertical-align:bottom}
tr.mean th,tr.mean td{border-top:2px solid #222}tbody tr:nth-child(even) td{background:#f6f6f6}
tbody th{position:sticky;left:0;background:#fff}
.note{font-size:.85em;color:#555;margin:.2em 0}.warning{color:#a40000;font-weight:600}
.verdict{font-size:1.1em;background:#eef5ee;padding:.6em 1em;border-left:4px solid #2a7a2a}
.cases{display:grid;gap:6px 10px;align-items:start;margin:.5em 0 1.5em}
.cases .head{font-weight:600;font-size:.85em;align-self:end}
figure{margin:0}figure img{width:TILEpx;height:TILEpx;image-rendering:pixelated;border:1px solid #bbb;display:block}
figcaption{font-size:.78em;line-height:1.25;max-width:TILEpx;margin-top:2px}
.normal{color:#1a5fb4}.anomalous{color:#a40000}.colorbar{display:flex;align-items:center;gap:.5em;font-size:.8em}
.colorbar img{width:256px;height:14px;border:1px solid #888}
.figures .grid{display:flex;flex-wrap:wrap;gap:12px}.figures figure img{width:auto;height:auto;max-width:560px;
max-height:420px;image-rendering:auto;border:none}.figures figcaption{max-width:560px}
.samples{display:flex;flex-wrap:wrap;gap:8px}""".replace("TILE", str(TILE))


def _png(array: np.ndarray) -> str:
    from anobench.images import png_bytes

    return base64.b64encode(png_bytes(np.ascontiguousarray(array))).decode("ascii")


def tables_html(tables: list[Table]) -> str:
    out = []
    for t in tables:
        out.append(f'<div class="table-wrap"><table>\n<caption>{html.escape(t.title)}</caption>')
        out.append("<thead><tr>" + "".join(f'<th scope="col">{html.escape(h)}</th>' for h in t.row_header + t.columns)
                   + "</tr></thead>\n<tbody>")
        for row in t.rows:
            cls = ' class="mean"' if row.rule_above else ""
            cells = [_cell_text(c, lambda s: f"<b>{s}</b>", escape=html.escape) for c in row.cells]
            out.append(f"<tr{cls}>" + "".join(f'<th scope="row">{html.escape(x)}</th>' for x in row.label)
                       + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</tbody></table>")
        for n in t.notes:
            cls = "note warning" if n.startswith("Warning") else "note verdict" if n.startswith("Verdict") else "note"
            out.append(f'<p class="{cls}">{html.escape(n)}</p>')
        out.append("</div>")
    return "\n".join(out)


def _colour_bar() -> str:
    ramp = _colour(np.tile(np.linspace(0, 1, 256, dtype=np.float32), (14, 1)))
    return ('<div class="colorbar"><span>map 0</span><img alt="colour bar: anomaly map value from 0 (blue) to 1 (red)" '
            f'src="data:image/png;base64,{_png(ramp)}"><span>1</span>'
            '<span>(detector map over the image; ground truth outlined in cyan, just outside the defect)</span></div>')


def _state(label: int, defect_type: str) -> str:
    return f"anomalous ({defect_type})" if label else "normal"


def _case_rows(items: list[TestImage], generators: list[str], names) -> str:
    out = []
    for item in items:
        state = _state(item.label, item.defect_type)
        cls = "anomalous" if item.label else "normal"
        if item.image is not None:
            out.append(f'<figure><img alt="test image {html.escape(item.name)}, {state}" '
                       f'src="data:image/png;base64,{_png(_resized(item.image, TILE))}">'
                       f'<figcaption><span class="{cls}">{html.escape(state)}</span><br>{html.escape(item.name)}'
                       "</figcaption></figure>")
        else:
            out.append(f'<figure><figcaption><span class="{cls}">{html.escape(state)}</span><br>'
                       f"{html.escape(item.name)} (image not found)</figcaption></figure>")
        for shown in item.shown:
            caption = (f"{html.escape(names(shown.generator))}: score {shown.score:.3f} (rank {shown.rank})<br>"
                       f'<span class="{cls}">{html.escape(state)}</span>')
            if shown.tile is not None:
                alt = f"{names(shown.generator)} heat map of {item.name}, score {shown.score:.3f}, {state}"
                out.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(shown.tile)}">'
                           f"<figcaption>{caption}</figcaption></figure>")
            else:
                out.append(f"<figure><figcaption>{caption}<br>(no map)</figcaption></figure>")
    return "\n".join(out)


def _dataset_label(dataset: str) -> str:
    from anobench.report import DATASET_LABELS

    return DATASET_LABELS.get(dataset, dataset)


def _section_html(section: CategorySection, names) -> str:
    columns = 1 + len(section.generators)
    head = ('<div class="head">test image</div>'
            + "".join(f'<div class="head">{html.escape(names(g))}</div>' for g in section.generators))
    grid = f'<div class="cases" style="grid-template-columns:repeat({columns},{TILE}px)">'
    parts = [f'<section class="category" id="category-{html.escape(section.category)}">',
             f"<h2>{html.escape(section.category)}</h2>",
             f'<p class="note">{section.n_test} test images ({html.escape(_dataset_label(section.dataset))}, protocol '
             f"{html.escape(section.protocol)}), the same for every generator; rank 1 = that detector's highest "
             "score.</p>", _colour_bar()]
    if section.false_alarms:
        parts += ["<h3>Normal images scored highest (false alarms first)</h3>", grid + head,
                  _case_rows(section.false_alarms, section.generators, names), "</div>"]
    if section.misses:
        parts += ["<h3>Anomalies scored lowest (misses first)</h3>", grid + head,
                  _case_rows(section.misses, section.generators, names), "</div>"]
    parts.append("</section>")
    return "\n".join(parts)


def _figures_html(figures: Sequence[Path]) -> str:
    if not figures:
        return ""
    out = ['<section class="figures" id="figures"><h2>Figures</h2>', '<div class="grid">']
    for path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        kind = "svg+xml" if path.suffix.lower() == ".svg" else "png"
        out.append(f'<figure><img alt="figure {html.escape(path.stem)}" src="data:image/{kind};base64,{data}">'
                   f"<figcaption>{html.escape(path.stem.replace('_', ' '))}</figcaption></figure>")
    out.append("</div></section>")
    return "\n".join(out)


def _samples_html(samples: Mapping[str, Sequence[Any]], names) -> str:
    if not samples:
        return ""
    from anobench.report_html import _png_base64

    out = ['<section class="generated" id="generated"><h2>Generated samples</h2>',
           '<p class="note">Training data each generator made; its mask outlined in red.</p>']
    for generator in sorted(samples):
        out.append(f"<h3>{html.escape(names(generator))}</h3><div class=\"samples\">")
        for i, image in enumerate(samples[generator]):
            out.append(f'<figure><img alt="{html.escape(names(generator))} sample {i + 1}" '
                       f'src="data:image/png;base64,{_png_base64(image)}"></figure>')
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


def html_page(tables: list[Table], title: str, samples: Mapping[str, Sequence[Any]] | None = None,
              sections: Sequence[CategorySection] = (), figures: Sequence[Path] = ()) -> str:
    """A self-contained page (images inlined): verdict and tables, figures, categories, samples."""
    from anobench.generators.base import display_name

    body = [f"<h1>{html.escape(title)}</h1>", '<section class="tables" id="tables">', tables_html(tables), "</section>",
            _figures_html(figures)]
    body += [_section_html(s, display_name) for s in sections]
    body.append(_samples_html(samples or {}, display_name))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")
