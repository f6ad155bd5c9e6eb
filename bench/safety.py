"""Cheap checks that run before expensive work: names, paths, sizes, seeds and OS errors.

Each check raises :class:`AnobenchError` with one line naming the option or file at fault, so
a command refuses in milliseconds instead of failing after minutes (or being killed by the
kernel with no message). The rules:

* an output never overlaps an input: it is not an input file, not inside an input folder
  (a data root, a generated set) and does not contain one;
* a category is one plain folder name: no separator, no ``..``, not absolute, so it can never
  leave ``--data-root`` or ``--out``;
* sizes are bounded by an estimate of the memory (and disk) they need, checked against what the
  machine has before anything is allocated;
* an OS error on a write (disk full, read-only disk, permission) names the file and the cause.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping

from anobench.errors import AnobenchError

# Seeds feed numpy's SeedSequence, which takes non-negative integers only.
MAX_SEED = 2**63 - 1

_OS_CAUSES = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EEXIST: "a file is in the way of a folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error",
}


def os_error(exc: OSError, path: str | os.PathLike | None = None, prefer_path: bool = False) -> AnobenchError:
    """One-line :class:`AnobenchError` for an OS error: the file (``path`` first if preferred), then the cause."""
    where = (path if prefer_path and path is not None else None) or exc.filename or path or "?"
    cause = _OS_CAUSES.get(exc.errno or 0, exc.strerror or exc.__class__.__name__)
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "; free some space and re-run the same command to resume"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "; write to another place (--out / --results)"
    return AnobenchError(f"{where}: {cause}{hint}")


def check_seed(seed: int, option: str = "--seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise AnobenchError(f"{option} must be a non-negative integer (at most 2**63-1), got {seed!r}")
    return seed


def check_category_name(category: str, option: str = "--category") -> str:
    """A category is one folder name under the data root: nothing that could leave it."""
    text = str(category)
    if (not text.strip() or text in (".", "..") or "/" in text or "\\" in text or "\x00" in text
            or os.path.isabs(text)):
        raise AnobenchError(f"{option} {category!r} is not a category name (one folder name under the data root, "
                            "no path separators)")
    return text


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output(output: str | os.PathLike, option: str, inputs: Mapping[str, str | os.PathLike | None],
                 folders: Iterable[str] = ()) -> None:
    """Refuse an output that is, is inside, or contains one of ``inputs`` (name -> path).

    ``folders`` names the inputs that are folders (data roots, generated sets): an output inside
    one of them is refused; for files, only the file itself (or a folder holding it) overlaps.
    """
    out = _resolved(output)
    folder_names = set(folders)
    for name, path in inputs.items():
        if path is None:
            continue
        source = _resolved(path)
        clash = out == source or _inside(source, out) or (name in folder_names and _inside(out, source))
        if clash:
            relation = ("is" if out == source else "is inside" if _inside(out, source) else "contains")
            raise AnobenchError(f"{option} {output}: {relation} the input {name} {path}; "
                                "an output may not overlap an input, choose another path")


def check_not_a_file(path: str | os.PathLike, option: str) -> None:
    """An output folder option that names an existing file (or has a file in its path)."""
    p = Path(path)
    for candidate in (p, *p.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise AnobenchError(f"{option} {path}: {candidate} is a file, not a folder")
            return


# --------------------------------------------------------------------------- sizes


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable on Linux, physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(nbytes) < 1024 or unit == "PB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} PB"


def check_memory(nbytes: float, what: str, available: int | None = None) -> None:
    """Refuse work whose memory estimate exceeds what the machine has available."""
    free = available_memory() if available is None else available
    if nbytes > free:
        raise AnobenchError(f"{what} needs about {_human(nbytes)} of memory, only {_human(free)} is available; "
                            "use a smaller size")


# Bytes of working memory per pixel of one image, lower bounds (the check must never refuse a run
# that fits): generation holds at least four float32 HxWx3 copies per sample (4 x 12 bytes);
# U-Net training (EfficientNet-Lite0 encoder, Adam) grew peak RSS by ~3 KB per input pixel on CPU
# between 128 and 192 px, so 1200 bytes is well under what it needs.
GENERATION_BYTES_PER_PIXEL = 48
TRAINING_BYTES_PER_PIXEL = 1200


def generation_memory(image_size: int, batch_size: int) -> float:
    return float(image_size) ** 2 * GENERATION_BYTES_PER_PIXEL * max(batch_size, 1)


def training_memory(image_size: int, batch_size: int) -> float:
    return float(image_size) ** 2 * TRAINING_BYTES_PER_PIXEL * max(batch_size, 1)


def check_generation_size(image_size: int, batch_size: int, num: int, out: str | os.PathLike,
                          existing: int = 0) -> None:
    """Memory for one batch, and disk for the samples still to make (>= 1 byte per pixel), before starting."""
    check_memory(generation_memory(image_size, batch_size),
                 f"--image-size {image_size} with --batch-size {batch_size}")
    need = float(max(num - existing, 0)) * float(image_size) ** 2  # a PNG pair compresses to >= ~1 byte/pixel
    free = free_disk(out)
    if free is not None and need > free:
        raise AnobenchError(f"--num {num} at --image-size {image_size} needs at least {_human(need)} of disk "
                            f"under {out}, only {_human(free)} is free")


def check_training_size(image_size: int, batch_size: int) -> None:
    check_memory(training_memory(image_size, batch_size),
                 f"detector training at image_size {image_size} with batch_size {batch_size}")


def free_disk(path: str | os.PathLike) -> int | None:
    """Free bytes on the disk that holds ``path`` (its nearest existing folder)."""
    p = Path(path).absolute()
    for candidate in (p, *p.parents):
        if candidate.is_dir():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def check_report_output(out: str | os.PathLike, results: Iterable[str | os.PathLike]) -> None:
    """A report never replaces a results file it reads, nor lands where it would be read as one."""
    from anobench.results import RESULTS_FILENAMES, STORE_SUFFIX, find_results_files

    target = _resolved(out)
    if Path(out).is_dir():
        raise AnobenchError(f"--out {out}: is a folder; give a file name for the report")
    for entry in results:
        source = _resolved(entry)
        files = [source] if not Path(entry).is_dir() else [_resolved(f) for f in find_results_files(entry)]
        if target in files:
            raise AnobenchError(f"--out {out}: is the results file {entry} the report reads; "
                                "an output may not overlap an input, choose another path")
        if Path(entry).is_dir() and _inside(target, source) and (
                target.name in RESULTS_FILENAMES or any(p.name.endswith(STORE_SUFFIX) for p in target.parents)):
            raise AnobenchError(f"--out {out}: would be read as a results file of {entry} next time; "
                                "choose another name")


def check_generate(generator: str, data_root: str | os.PathLike, category: str, num: int, out: str | os.PathLike,
                   seed: int, image_size: int, batch_size: int, anomaly_source: str | os.PathLike | None = None,
                   checkpoint: str | os.PathLike | None = None) -> None:
    """Everything about a ``generate`` call that can be refused before reading any image."""
    check_seed(seed)
    check_category_name(category)
    if image_size < 1:
        raise AnobenchError(f"--image-size must be at least 1, got {image_size}")
    check_not_a_file(out, "--out")
    inputs = {"--data-root": data_root, "--anomaly-source": anomaly_source, "--checkpoint": checkpoint}
    folder = Path(out) / generator / category
    check_output(folder, "--out", inputs, folders=inputs)
    images = folder / "images"
    existing = sum(1 for _ in os.scandir(images)) if images.is_dir() else 0  # a resume needs only the rest
    check_generation_size(image_size, batch_size, num, out, existing)


def check_train(data_root: str | os.PathLike, category: str, generated: str | os.PathLike, out: str | os.PathLike,
                seed: int, image_size: int, batch_size: int) -> None:
    """Everything about a ``train-detector`` call that can be refused before reading any image."""
    check_seed(seed)
    check_category_name(category)
    check_not_a_file(out, "--out")
    inputs = {"--data-root": data_root, "--generated": generated}
    check_output(out, "--out", inputs, folders=inputs)
    check_training_size(image_size, batch_size)


def check_writable(path: str | os.PathLike, option: str) -> None:
    """The file, or the nearest existing folder of a path to create, can be written."""
    p = Path(path).absolute()
    for candidate in (p, *p.parents):
        if candidate.exists():
            if candidate != p and not candidate.is_dir():
                raise AnobenchError(f"{option} {path}: {candidate} is a file, not a folder")
            if not os.access(candidate, os.W_OK) or (candidate.is_dir() and not os.access(candidate, os.X_OK)):
                cause = "read-only file system" if _read_only_mount(candidate) else "permission denied"
                raise AnobenchError(f"{option} {path}: {candidate}: {cause}; write to another place")
            return


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def folder_writable(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK) and not _read_only_mount(p)
