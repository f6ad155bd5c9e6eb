"""Re-create dhdiff.csv from the DH-Diff paper's text (../shared/papers/dh-diff.txt, Tables II-IV).

Run from the repository root: ``python results/published/extract_dhdiff.py ../shared/papers/dh-diff.txt``.
Cells ``(a, b)`` become two tidy rows; values are stored as fractions (the paper prints percent).
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

PROTOCOL = "dhdiff: generators trained on 50% of the anomalies, full test set (leaky); checkpoint selection not stated"
TABLES = {  # caption prefix -> (table, dataset, metric pair)
    "TABLE II:": ("II", "mvtec_ad", ("image_auroc", "pixel_auroc")),
    "TABLE III:": ("III", "mpdd", ("image_auroc", "pixel_auroc")),
    "TABLE IV:": ("IV", "mvtec_ad", ("pixel_auroc", "pixel_ap")),
}
METHOD_NAMES = {"Ours": "DH-Diff", "Ano.Diff.": "AnomalyDiffusion", "Ano. Diff.": "AnomalyDiffusion",
                "DualAno.": "DualAnoDiff"}
CELL = re.compile(r"\(\s*([\d.]+)\s*,\s*([\d.]+)\s*\)")


def category_name(text: str) -> str:
    name = text.strip().lower().replace(" ", "_")
    return {"avg": "average"}.get(name, name)


def extract(lines: list[str]) -> list[dict]:
    rows = []
    for number, line in enumerate(lines):
        prefix = next((p for p in TABLES if line.startswith(p)), None)
        if prefix is None:
            continue
        table, dataset, metrics = TABLES[prefix]
        body = [ln for ln in lines[number + 1:number + 24]]
        start = next(i for i, ln in enumerate(body) if ln.startswith("Category"))
        header = [re.sub(r"\s*\[\d+\]", "", h).strip() for h in body[start].split("\t")[1:]]
        for offset, row in enumerate(body[start + 1:], start + 1):
            if not row.strip():
                break
            parts = row.split("\t")
            cells = CELL.findall(row)
            if len(cells) != len(header):
                raise ValueError(f"line {number + 2 + offset}: {len(cells)} cells for {len(header)} methods")
            for method, (a, b) in zip(header, cells):
                for metric, value in zip(metrics, (a, b)):
                    rows.append({
                        "dataset": dataset, "category": category_name(parts[0]),
                        "method": METHOD_NAMES.get(method, method), "metric": metric,
                        "value": f"{float(value) / 100:.4f}", "paper": "DH-Diff", "table": table,
                        "source_line": number + 2 + offset, "protocol": PROTOCOL,
                    })
    return rows


def main(path: str) -> None:
    rows = extract(Path(path).read_text(encoding="utf-8").splitlines())
    out = Path(__file__).with_name("dhdiff.csv")
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{out}: {len(rows)} rows")


if __name__ == "__main__":
    main(sys.argv[1])
