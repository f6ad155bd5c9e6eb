"""Protocol splits of a category's real anomalies into few-shot references and held-out tests.

Per defect type, anomalies are sorted by the integers in their file stem and split by a named
rule. Every generator of one comparison is evaluated on the same held-out test set; zero-shot
generators simply ignore the references. A content-hash check refuses any split in which a
reference image is also a test image, unless the protocol is the (named, leaky) compatible one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from anobench.datasets import CategoryData, Sample, natural_key
from anobench.errors import AnobenchError


def _thirds(n: int) -> tuple[int, int]:
    return n // 3, n // 3


def _half(n: int) -> tuple[int, int]:
    return n // 2, n // 2


def _anomalydiffusion(n: int) -> tuple[int, int]:
    # That repository trains on [:n//3 + 1] and tests on [n//3:]: index n//3 is in both.
    return min(n, n // 3 + 1), n // 3


def _dualanodiff(n: int) -> tuple[int, int]:
    # DualAnoDiff trains on [:k], k = n//3 (+1 when n//3 is not a multiple of 3)
    # (zhiqing0205/DualAnoDiff@0e21eb0 dual-interrelated_diff/train_dreambooth_lora.py,
    # DreamBoothDataset.__init__), and its evaluation loader tests on [n//3:]
    # (@1366ad2 eval/unet_utils/data_loader.py line 21): index n//3 is in both when k > n//3.
    k = n // 3
    k = k + 1 if k % 3 != 0 else k
    return min(k, n), n // 3


def _dhdiff(n: int) -> tuple[int, int]:
    # The DH-Diff paper trains the generator on 50% of the anomalies (dh-diff.txt line 222) and
    # evaluates on the full test set ("the same test sets", line 357): every reference is tested.
    return n // 2, 0


# name -> n -> (number of references, index where the test part starts)
PROTOCOLS: dict[str, Callable[[int], tuple[int, int]]] = {
    "thirds": _thirds,
    "half": _half,
    "anomalydiffusion": _anomalydiffusion,
    "dualanodiff": _dualanodiff,
    "dhdiff": _dhdiff,
}
# protocols whose test set holds some of the references (reproduced as the papers ran them)
LEAKY_PROTOCOLS = frozenset({"anomalydiffusion", "dualanodiff", "dhdiff"})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pixel_sha256(path: Path) -> str:
    """Hash of an image's decoded pixels (RGB, with its size): equal for a re-compressed copy."""
    from anobench.images import read_rgb

    pixels = np.ascontiguousarray(read_rgb(path))
    digest = hashlib.sha256(f"{pixels.shape}".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


@dataclass
class ProtocolSplit:
    """Few-shot reference anomalies and the held-out test set of one category.

    ``hashes`` holds every listed image's :func:`pixel_sha256` (relative path -> hash), and
    ``dropped`` the test images left out because they duplicate a reference.
    """

    name: str
    references: list[Sample]
    test: list[Sample]
    leaky: bool
    hashes: dict[str, str] = field(default_factory=dict)
    dropped: list[dict[str, str]] = field(default_factory=list)

    def summary(self, data: CategoryData) -> dict:
        """What every output records about the split: rule, counts, file lists and pixel hashes."""
        per_type: dict[str, dict[str, int]] = {}
        for s in self.references:
            per_type.setdefault(s.defect_type, {"reference": 0, "test": 0})["reference"] += 1
        for s in self.test:
            if s.label:
                per_type.setdefault(s.defect_type, {"reference": 0, "test": 0})["test"] += 1
        return {
            "name": self.name,
            "leaky": self.leaky,
            "per_defect_type": per_type,
            "test_normals": sum(1 for s in self.test if s.label == 0),
            "references": [data.relpath(s.path) for s in self.references],
            "test": [data.relpath(s.path) for s in self.test],
            "sha256": dict(sorted(self.hashes.items())),
            "dropped": list(self.dropped),
        }


def split_category(data: CategoryData, protocol: str = "thirds", drop_duplicates: bool = False) -> ProtocolSplit:
    """Split ``data``'s test anomalies by ``protocol``; test normals all stay in the test set.

    Only a protocol in :data:`LEAKY_PROTOCOLS`, named explicitly, may share images between the
    two sets; the split then carries ``leaky=True`` into every output. A test image whose
    decoded pixels equal a reference's is refused, or with ``drop_duplicates`` left out of the
    test set and recorded in ``dropped``.
    """
    if protocol not in PROTOCOLS:
        raise AnobenchError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    leaky = protocol in LEAKY_PROTOCOLS
    references: list[Sample] = []
    test: list[Sample] = list(data.test_normals)
    by_type: dict[str, list[Sample]] = {}
    for sample in data.test_anomalies:
        by_type.setdefault(sample.defect_type, []).append(sample)
    for defect_type in sorted(by_type):
        ordered = sorted(by_type[defect_type], key=lambda s: natural_key(s.path))
        n_ref, test_start = PROTOCOLS[protocol](len(ordered))
        references.extend(ordered[:n_ref])
        test.extend(ordered[test_start:])
    hashes = {data.relpath(s.path): pixel_sha256(s.path) for s in references + test}
    test, dropped = _guard_leakage(data, references, test, hashes, leaky, drop_duplicates)
    return ProtocolSplit(protocol, references, test, leaky, hashes, dropped)


def _guard_leakage(data: CategoryData, references: list[Sample], test: list[Sample], hashes: dict[str, str],
                   leaky: bool, drop: bool) -> tuple[list[Sample], list[dict[str, str]]]:
    """Refuse (or with ``drop`` remove) test images whose pixels equal a reference image's."""
    if leaky or not references:
        return test, []
    ref_by_hash = {hashes[data.relpath(s.path)]: data.relpath(s.path) for s in references}
    kept, dropped = [], []
    for sample in test:
        name = data.relpath(sample.path)
        twin = ref_by_hash.get(hashes[name])
        if twin is None:
            kept.append(sample)
        elif drop:
            dropped.append({"test": name, "duplicate_of": twin})
        else:
            raise AnobenchError(
                f"{sample.path}: test image has the same pixels as reference {twin} (the split would leak "
                "test data into generation); pass --drop-duplicates to leave such test images out"
            )
    return kept, dropped


def frozen_split(data: CategoryData, summary: dict, where: str | Path, verify: bool = True) -> ProtocolSplit:
    """The split an artifact recorded, read back from its file lists (never recomputed by name).

    With ``verify`` every listed image's pixels are hashed and compared with the record, so a
    changed or swapped data folder is refused, naming the first file that differs.
    """
    if not isinstance(summary, dict) or not isinstance(summary.get("test"), list):
        raise AnobenchError(f"{where}: records no protocol split (made by an older anobench?); "
                            "generate the set again")
    by_name = {data.relpath(s.path): s for s in data.test}
    hashes = dict(summary.get("sha256") or {})

    def pick(names: list[str]) -> list[Sample]:
        out = []
        for name in names:
            if name not in by_name:
                raise AnobenchError(f"{where}: split lists {name}, which is not a test image of {data.root} "
                                    "(pass --data-root where the data is now)")
            sample = by_name[name]
            if verify and name in hashes and pixel_sha256(sample.path) != hashes[name]:
                raise AnobenchError(f"{sample.path}: pixels differ from those recorded in {where}'s split")
            out.append(sample)
        return out

    return ProtocolSplit(str(summary.get("name")), pick(list(summary.get("references") or [])),
                         pick(list(summary["test"])), bool(summary.get("leaky")), hashes,
                         list(summary.get("dropped") or []))


def split_mismatch(a: dict, b: dict) -> str | None:
    """Why two recorded splits differ (rule, reference or test lists), or None when they agree."""
    for key in ("name", "references", "test"):
        if (a or {}).get(key) != (b or {}).get(key):
            return key
    return None


def find_duplicates(data: CategoryData) -> list[list[str]]:
    """Groups of images of one category with identical decoded pixels (train and test)."""
    groups: dict[str, list[str]] = {}
    for sample in [*data.train, *data.test]:
        groups.setdefault(pixel_sha256(sample.path), []).append(data.relpath(sample.path))
    return sorted(sorted(g, key=natural_key) for g in groups.values() if len(g) > 1)
