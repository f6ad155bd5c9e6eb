"""The HTML report: tables, a self-contained page, and the images it shows (samples, heat maps)."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anobench.errors import AnobenchError
from anobench.results import HEATMAP_DIR, NO_DETECTOR, find_results_files

from anobench.report_tables import Table  # noqa: F401
from anobench.report_writers import _cell_text  # noqa: F401

def write_html_tables(tables: list[Table]) -> str:
    """The tables as HTML: the same markup as the report page's (one writer for both)."""
    from anobench.report_page import tables_html

    return tables_html(tables)




_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1.5em 0}caption{font-weight:600;text-align:left;padding:.4em 0}
th,td{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:center}th{text-align:left}
thead th{border-bottom:2px solid #222}tr.mean th,tr.mean td{border-top:2px solid #222}
.note{font-size:.85em;color:#555}.grid{display:flex;flex-wrap:wrap;gap:6px}
.grid img{height:160px;width:auto;image-rendering:pixelated;border:1px solid #ccc}
.verdict{font-weight:600}.figures img{max-width:48%;margin:4px}"""


def _html_page(tables: list[Table], title: str, samples: Mapping[str, Sequence[Any]],
               heatmaps: Mapping[str, Sequence[Any]], lead: str = "", figures: Sequence[Any] = ()) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f'<p class="verdict">{html.escape(line)}</p>' for line in lead.splitlines() if line.strip()]
    body.append(write_html_tables(tables))
    pngs = [f for f in figures if str(f).endswith(".png")]
    if pngs:  # the statistics figures (anobench.figures), embedded
        tags = "".join(f'<img class="figure" alt="" src="data:image/png;base64,{_png_base64(f)}">' for f in pngs)
        body.append(f"<h2>Figures</h2>\n<div class=\"figures\">{tags}</div>")
    for generator in sorted(set(samples) | set(heatmaps)):
        body.append(f"<h2>{html.escape(generator)}</h2>")
        for caption, images in (("Generated samples (mask outline in red)", samples.get(generator, ())),
                                ("Detector heat maps on real test images", heatmaps.get(generator, ()))):
            if not images:
                continue
            tags = "".join(f'<img alt="" src="data:image/png;base64,{_png_base64(im)}">' for im in images)
            body.append(f"<h3>{caption}</h3>\n<div class=\"grid\">{tags}</div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# --------------------------------------------------------------------------- images for the HTML page

def _png_base64(image: Any) -> str:
    """A path (PNG bytes embedded as they are) or a uint8 array, as base64 PNG."""
    from anobench.images import png_bytes, read_rgb

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        data = path.read_bytes() if path.suffix.lower() == ".png" and path.is_file() else png_bytes(read_rgb(path))
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8 and array.dtype != bool:
            array = np.clip(np.asarray(array, dtype=np.float64) * 255.0, 0, 255).astype(np.uint8)
        data = png_bytes(array)
    return base64.b64encode(data).decode("ascii")


def outline(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    """The image with the mask's boundary drawn in ``color`` (1 px)."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def sample_tiles(folder: str | os.PathLike, limit: int = 8, size: int = 160) -> tuple[str, list[np.ndarray]]:
    """(generator name, up to ``limit`` evenly spaced samples with mask outlines) of a generated set."""
    from anobench.store import GeneratedSet

    generated = GeneratedSet.open(folder)
    n = len(generated.rows)
    picks = sorted(set(np.linspace(0, n - 1, num=min(limit, n)).round().astype(int).tolist())) if n else []
    tiles = []
    for i in picks:
        image, mask = generated.load(i, size)
        tiles.append(outline(image, mask))
    return generated.generator, tiles


def gallery(results: Sequence[str | os.PathLike], generated: Sequence[str | os.PathLike] = (),
            limit: int = 8) -> tuple[dict[str, list[Any]], dict[str, list[Path]]]:
    """Images for the HTML page: samples from generated sets, heat maps from run folders.

    ``generated``: generated-set folders or roots holding them (any folder with a dataset.json
    below). Heat maps: ``heatmaps/*.png`` beside each results file, credited to the generators
    whose rows that file holds.
    """
    from anobench.results import read_results

    samples: dict[str, list[Any]] = {}
    for root in generated:
        root = Path(root)
        if not root.exists():
            raise AnobenchError(f"{root}: generated folder not found")
        sets = [root] if (root / "dataset.json").is_file() else sorted(p.parent for p in root.rglob("dataset.json"))
        if not sets:
            raise AnobenchError(f"{root}: no generated set (dataset.json) found")
        for folder in sets:
            name, tiles = sample_tiles(folder, limit=limit)
            samples.setdefault(name, []).extend(tiles)
    heatmaps: dict[str, list[Path]] = {}
    for entry in results:
        for path in find_results_files(entry):
            pngs = sorted((path.parent / HEATMAP_DIR).glob("*.png"))[:limit]
            if not pngs:
                continue
            rows = read_results(path)
            for generator in sorted(set(rows.loc[rows["detector"] != NO_DETECTOR, "generator"])):
                heatmaps.setdefault(generator, []).extend(pngs)
    return samples, heatmaps


def heatmap_paths(run: str | os.PathLike, limit: int = 8) -> list[Path]:
    """The first ``limit`` heat-map PNGs an evaluated run saved under ``RUN/heatmaps``."""
    return sorted((Path(run) / HEATMAP_DIR).glob("*.png"))[:limit]
