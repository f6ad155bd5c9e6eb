"""Text writers of report tables: LaTeX (booktabs), Markdown and CSV, one function per format."""

from __future__ import annotations

import io
from collections.abc import Callable



from anobench.report_tables import MISSING, Cell, Table  # noqa: F401

# --------------------------------------------------------------------------- writers

def _cell_text(cell: Cell, bold: Callable[[str], str], pm: str = " ± ", escape: Callable[[str], str] = str,
               missing: str = MISSING) -> str:
    if cell.text is not None:
        return escape(cell.text)
    texts = [missing if v.missing else bold(v.text(pm)) if v.bold else v.text(pm) for v in cell.values]
    text = texts[0] if len(texts) == 1 else "(" + ", ".join(texts) + ")"
    return text + escape(cell.mark) if cell.mark else text


def _latex_escape(text: str) -> str:
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
             "±": r"$\pm$", "†": r"$^\dagger$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", MISSING: "--",
             "−": r"$-$", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$"}
    return "".join(table.get(ch, ch) for ch in str(text))


def latex_label(title: str, number: int) -> str:
    """A stable ``\\label`` key for a table: ``tab:anobench-<n>-<slug of the title>``."""
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].rstrip("-")
    return f"tab:anobench-{number}-{slug}"


LATEX_PREAMBLE = ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n"
                  "\\usepackage{booktabs}\n\\usepackage{graphicx}\n\\usepackage[margin=2cm,landscape]{geometry}\n"
                  "\\begin{document}\n")


def write_latex(tables: list[Table], standalone: bool = False) -> str:
    """booktabs tables, one ``table`` float each with a ``\\label``; ``standalone``: a whole document."""
    out = ["% anobench report: needs \\usepackage{booktabs}"]
    for number, t in enumerate(tables, 1):
        spec = "l" * len(t.row_header) + "c" * len(t.columns)
        wide = len(t.row_header) + len(t.columns) > 8
        out += ["\\begin{table}[t]", "\\centering", f"\\caption{{{_latex_escape(t.title)}}}",
                f"\\label{{{latex_label(t.title, number)}}}"] + (["\\resizebox{\\linewidth}{!}{%"] if wide else []) + [
                f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                " & ".join(_latex_escape(h) for h in t.row_header + t.columns) + " \\\\", "\\midrule"]
        for row in t.rows:
            if row.rule_above:
                out.append("\\midrule")
            cells = [_cell_text(c, lambda s: f"\\textbf{{{s}}}", pm=" $\\pm$ ", escape=_latex_escape, missing="--")
                     for c in row.cells]
            out.append(" & ".join([_latex_escape(x) for x in row.label] + cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"] + (["}"] if wide else [])
        for note in t.notes:
            out.append(f"\\par\\smallskip{{\\footnotesize {_latex_escape(note)}}}")
        out += ["\\end{table}", ""]
    text = "\n".join(out)
    return LATEX_PREAMBLE + text + "\n\\end{document}\n" if standalone else text


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def write_markdown(tables: list[Table]) -> str:
    out = []
    for t in tables:
        header = t.row_header + t.columns
        out += [f"**{_md_escape(t.title)}**", "",
                "| " + " | ".join(_md_escape(h) for h in header) + " |",
                "|" + "|".join([":---"] * len(t.row_header) + [":---:"] * len(t.columns)) + "|"]
        for row in t.rows:
            cells = [_cell_text(c, lambda s: f"**{s}**", escape=_md_escape) for c in row.cells]
            out.append("| " + " | ".join([_md_escape(x) for x in row.label] + cells) + " |")
        out += [""] + [f"_{_md_escape(n)}_" for n in t.notes] + ([""] if t.notes else [])
    return "\n".join(out)


def write_csv(tables: list[Table]) -> str:
    """The table as CSV; several tables become blocks, each after a title line and an empty line.

    Pairs are split into one column per metric.

    Numbers keep the report's rounding (percent, one decimal); with several seeds a ``std``
    column follows each value. Blocks are separated by an empty line.
    """
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for number, t in enumerate(tables):
        if len(tables) > 1:  # a lone table stays plain CSV that pandas reads as it is
            if number:
                writer.writerow([])
            writer.writerow([t.title])
        with_std = any(v.std is not None for row in t.rows for c in row.cells for v in c.values)
        header = list(t.row_header) + _csv_columns(t, with_std)
        writer.writerow(header)
        for row in t.rows:
            line = list(row.label)
            for cell in row.cells:
                if cell.text is not None:
                    line.append(cell.text)
                    continue
                for v in cell.values:
                    line.append("" if v.missing else v.fmt(v.mean))
                    if with_std:
                        line.append("" if v.std is None else v.fmt(v.std))
            writer.writerow(line)
    return buffer.getvalue()


def _csv_columns(t: Table, with_std: bool) -> list[str]:
    names = []
    for j, column in enumerate(t.columns):
        if any(row.cells[j].text is not None for row in t.rows):
            names.append(column)
            continue
        for part in t.parts:
            name = f"{column} {part}".strip()
            names.append(name)
            if with_std:
                names.append(f"{name} std")
    return names

