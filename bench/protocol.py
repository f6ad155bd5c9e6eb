"""Protocol splits of a category's real anomalies into few-shot references and held-out tests.

Per defect type, anomalies are sorted by the integers in their file stem and split by a named
rule. Every generator of one comparison is evaluated on the same held-out test set; zero-shot
generators simply ignore the references. A content-hash check refuses any split in which a
reference image is also a test image, unless the protocol is the (named, leaky) compatible one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


@dataclass
class ProtocolSplit:
    """Few-shot reference anomalies and the held-out test set of one category."""

    name: str
    references: list[Sample]
    test: list[Sample]
    leaky: bool

    def summary(self, data: CategoryData) -> dict:
        """What every output records about the split: rule, counts, exact file lists."""
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
        }


def split_category(data: CategoryData, protocol: str = "thirds") -> ProtocolSplit:
    """Split ``data``'s test anomalies by ``protocol``; test normals all stay in the test set.

    Only a protocol in :data:`LEAKY_PROTOCOLS`, named explicitly, may share images between the
    two sets; the split then carries ``leaky=True`` into every output.
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
    _guard_leakage(references, test, leaky)
    return ProtocolSplit(protocol, references, test, leaky)


def _guard_leakage(references: list[Sample], test: list[Sample], leaky: bool) -> None:
    """Refuse a split where a reference image's bytes equal a test image's."""
    if leaky or not references:
        return
    ref_hashes = {file_sha256(s.path): s.path for s in references}
    for sample in test:
        digest = file_sha256(sample.path)
        if digest in ref_hashes:
            raise AnobenchError(
                f"{sample.path}: test image is byte-identical to reference {ref_hashes[digest]} "
                "(the split would leak test data into generation)"
            )
