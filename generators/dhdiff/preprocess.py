"""DH-Diff pre-processing (paper Fig. 4, top): raw masks, reference crops, prompts, guidance S_O.

- Raw mask: the image is divided into a K x K grid (K = 5) and every cell that contains anomaly
  is marked. Cell edges are snapped to the latent grid (``unit`` pixels) so a raw mask is exact
  in latent space too.
- Reference image: the anomaly image cropped by the raw mask (outside the marked cells: 0 in the
  model's [-1, 1] range, i.e. mid-grey), same size and position as the image.
- Prompt: "a photo of a {category} with {defect words}"; a normal image's prompt has no defect
  part. The prefix before the defect words tells S_O which tokens are the defect tokens.
- Graphical guidance S_O (optional): points inside the mask, the detailed mask, or the raw mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GUIDANCE_KINDS = ("points", "detailed", "raw")


def cell_edges(size: int, k: int, unit: int = 1) -> np.ndarray:
    """The k+1 pixel edges of a k x k grid over ``size`` pixels, on multiples of ``unit``."""
    units = size // unit
    return np.round(np.linspace(0, units, k + 1)).astype(int) * unit


def raw_mask_cells(mask: np.ndarray, k: int = 5, unit: int = 1) -> np.ndarray:
    """Bool ``[k, k]``: the grid cells holding at least one anomalous pixel."""
    h, w = mask.shape
    rows, cols = cell_edges(h, k, unit), cell_edges(w, k, unit)
    cells = np.zeros((k, k), dtype=bool)
    for i in range(k):
        for j in range(k):
            cells[i, j] = bool(mask[rows[i]:rows[i + 1], cols[j]:cols[j + 1]].any())
    return cells


def cells_to_mask(cells: np.ndarray, size: int | tuple[int, int], unit: int = 1) -> np.ndarray:
    """The raw mask image (bool HxW) of a cell set."""
    h, w = (size, size) if isinstance(size, int) else size
    k = cells.shape[0]
    rows, cols = cell_edges(h, k, unit), cell_edges(w, k, unit)
    mask = np.zeros((h, w), dtype=bool)
    for i, j in zip(*np.nonzero(cells)):
        mask[rows[i]:rows[i + 1], cols[j]:cols[j + 1]] = True
    return mask


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Area-resize a bool mask: a pixel is anomalous when half of it is; a tiny defect never vanishes."""
    if mask.shape == (size, size):
        return mask.astype(bool)
    from PIL import Image

    area = np.asarray(Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.BOX))
    out = area >= 0.5
    if mask.any() and not out.any():
        out = area > 0
    return out


def crop_reference(image: np.ndarray, raw_mask: np.ndarray) -> np.ndarray:
    """The reference image: ``image`` (float CxHxW in [-1, 1]) inside the raw mask, 0 (grey) elsewhere."""
    return np.where(raw_mask[None], image, 0).astype(image.dtype)


def humanize(defect_type: str) -> str:
    return defect_type.replace("_", " ").replace("-", " ").strip()


def prompt_for(category: str, defect_type: str | None = None) -> tuple[str, str]:
    """(prompt, prefix): the prefix is what precedes the defect words (a normal prompt: all of it)."""
    normal = f"a photo of a {humanize(category)}"
    if not defect_type:
        return normal, normal
    return f"{normal} with {humanize(defect_type)}", f"{normal} with"


def transform_cells(cells: np.ndarray, rng: np.random.Generator, kind: str | None) -> np.ndarray:
    """A random symmetry of a cell set: none, horizontal flip, or any of the 8 dihedral maps."""
    if kind is None or kind == "none":
        return cells.copy()
    out = cells[:, ::-1] if rng.random() < 0.5 else cells
    if kind == "dihedral":
        out = np.rot90(out, int(rng.integers(4)))
    return np.ascontiguousarray(out)


def random_cells(rng: np.random.Generator, k: int, count: int) -> np.ndarray:
    """A random 4-connected set of ``count`` cells, grown from a random seed cell."""
    count = int(np.clip(count, 1, k * k))
    cells = np.zeros((k, k), dtype=bool)
    cells[rng.integers(k), rng.integers(k)] = True
    while cells.sum() < count:
        frontier = np.zeros_like(cells)
        frontier[1:] |= cells[:-1]
        frontier[:-1] |= cells[1:]
        frontier[:, 1:] |= cells[:, :-1]
        frontier[:, :-1] |= cells[:, 1:]
        candidates = np.argwhere(frontier & ~cells)
        i, j = candidates[rng.integers(len(candidates))]
        cells[i, j] = True
    return cells


def sample_cells(rng: np.random.Generator, reference_cells: list[np.ndarray], mode: str, transform: str | None,
                 k: int) -> np.ndarray:
    """A raw-mask cell set for a new defect.

    ``reference``: one of the few-shot references' cell sets under a random symmetry (defects stay
    where that category has them); ``random``: a connected set as large as a random reference's.
    """
    if mode == "reference" and reference_cells:
        return transform_cells(reference_cells[int(rng.integers(len(reference_cells)))], rng, transform)
    if reference_cells:
        count = int(reference_cells[int(rng.integers(len(reference_cells)))].sum())
    else:
        count = int(rng.integers(1, 4))
    return random_cells(rng, k, count)


def point_guidance(mask: np.ndarray, rng: np.random.Generator, max_points: int = 3) -> np.ndarray:
    """1 to ``max_points`` discs at random anomalous pixels (radius ~ 1/32 of the image side)."""
    h, w = mask.shape
    out = np.zeros((h, w), dtype=np.float32)
    pixels = np.argwhere(mask)
    if not len(pixels):
        return out
    radius = max(1.0, min(h, w) / 32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(1, max_points + 1))):
        y, x = pixels[rng.integers(len(pixels))]
        out[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = 1.0
    return out


def guidance_map(kind: str, mask: np.ndarray, raw_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """S_O's source map (float HxW in [0, 1]) of one graphical guidance kind."""
    if kind == "raw":
        return raw_mask.astype(np.float32)
    if kind == "detailed":
        return mask.astype(np.float32)
    if kind == "points":
        return point_guidance(mask, rng)
    raise ValueError(f"unknown guidance kind {kind!r} (known: {', '.join(GUIDANCE_KINDS)})")


@dataclass
class TrainingExample:
    """One pre-processed training pair (pixels at model resolution, channels first, [-1, 1])."""

    image: np.ndarray  # float32 [3, H, W]
    annotation: np.ndarray  # float32 [1, H, W] in {0, 1}
    raw_mask: np.ndarray  # bool [H, W]
    reference: np.ndarray  # float32 [3, H, W]: image cropped by the raw mask
    prompt: str
    prefix: str
    guidance: np.ndarray | None  # float32 [H, W] or None


def make_example(image: np.ndarray, mask: np.ndarray, category: str, defect_type: str | None,
                 rng: np.random.Generator, *, k: int, unit: int, flip: bool, guidance_prob: float,
                 guidance_kinds: tuple[str, ...], normal_cells: list[np.ndarray]) -> TrainingExample:
    """Pre-process one image (float32 HxWx3 in [-1, 1]) and its mask.

    An anomaly's raw mask comes from its mask. A normal image (``defect_type`` None) gets the cell
    set of a random reference under a random flip, an empty annotation and the no-defect prompt:
    it teaches the model what the object looks like inside the cells it will later edit.
    """
    if flip and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    size = mask.shape
    if defect_type is None:
        cells = sample_cells(rng, normal_cells, "reference", "flip", k)
        mask = np.zeros(size, dtype=bool)
    else:
        cells = raw_mask_cells(mask, k, unit)
    raw = cells_to_mask(cells, size, unit)
    prompt, prefix = prompt_for(category, defect_type)
    guidance = None
    if guidance_kinds and rng.random() < guidance_prob:
        kind = guidance_kinds[int(rng.integers(len(guidance_kinds)))]
        guidance = guidance_map(kind, mask, raw, rng)
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    return TrainingExample(
        image=chw,
        annotation=mask[None].astype(np.float32),
        raw_mask=raw,
        reference=crop_reference(chw, raw),
        prompt=prompt,
        prefix=prefix,
        guidance=guidance,
    )
