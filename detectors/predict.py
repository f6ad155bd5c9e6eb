"""Running a detector on images: the input conversion and batched prediction (maps and scores)."""

from __future__ import annotations

import numpy as np
import torch

from anobench.detectors.base import Detector


def to_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 B x 3 x H x W -> float in [0, 1] (the detectors' input)."""
    x = images.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_images(model: Detector, images: list[np.ndarray] | torch.Tensor, batch_size: int = 8,
                   channels_last: bool = False, map_sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(maps N x H x W float32, scores N) for uint8 HxWx3 arrays or a uint8 N x 3 x H x W tensor."""
    model.eval()
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if not isinstance(chunk, torch.Tensor):
            chunk = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2)
        m, s = model.predict(to_input(chunk, channels_last), map_sigma=map_sigma)
        maps.append(m.numpy().astype(np.float32))
        scores.append(s.numpy())
    return np.concatenate(maps), np.concatenate(scores)
