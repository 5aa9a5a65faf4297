"""Importers: existing defocus image collections as z-stack datasets (``models.zstack``).

Imported datasets *reference* the source images in place instead of copying them (the public
dataset of Jiang et al. is about 130,000 JPEG tiles; re-encoding them would double the disk use
and JPEG-to-TIFF conversion gains nothing). Each image is decoded once during the import to
check that it is readable and that all planes of a dataset share one shape. The manifest holds
the image paths (relative to the dataset folder when inside it, else absolute): keep the source
where it is, or import again after moving it.

* ``import_jiang``: the public dataset of Jiang et al. (2018), folders ``s{segment}_l{location}/``
  holding 224 x 224 JPEG tiles ``Seg{id}_defocus{nm}.jpg`` (training) and full frames
  ``defocus{nm}.jpg`` (testing). Labels are signed nanometres in the file names; they become
  ``defocus_um = sign * nm / 1000``. Tiles and full frames have different shapes, so they become
  two datasets, ``OUT/tiles`` and ``OUT/frames``; each ``s{segment}_l{location}`` folder is one
  stack (field of view), so a train/test split never puts one field of view on both sides.
* ``import_folder``: any folder of images whose file names carry the defocus; a regular
  expression with a named group ``defocus`` extracts it (optionally a group ``stack`` names the
  field of view; otherwise each sub-folder is one).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from models.errors import DatasetError
from models.zstack import IMAGE_SUFFIXES, ZStackWriter, check_z_reference, read_image_file

__all__ = [
    "DEFAULT_FOLDER_REGEX",
    "JIANG_OBJECTIVE",
    "JIANG_PIXEL_SIZE_UM",
    "ImportResult",
    "import_folder",
    "import_jiang",
]

log = logging.getLogger(__name__)

# Jiang et al. 2018: Nikon 20x/0.75, Point Grey BFS-U3-51S5C-C with 3.45 um pixels -> 0.1725 um at the sample.
JIANG_OBJECTIVE = "20x/0.75"
JIANG_PIXEL_SIZE_UM = 3.45 / 20.0
JIANG_Z_REFERENCE = "external:jiang2018"
_JIANG_FOLDER = re.compile(r"^s(?P<segment>\d+)_l(?P<location>\d+)$", re.IGNORECASE)
_JIANG_TILE = re.compile(r"^Seg(?P<seg>\d+)_defocus(?P<nm>[-+]?\d+(?:\.\d+)?)\.jpe?g$", re.IGNORECASE)
_JIANG_FRAME = re.compile(r"^defocus(?P<nm>[-+]?\d+(?:\.\d+)?)\.jpe?g$", re.IGNORECASE)

DEFAULT_FOLDER_REGEX = r"(?P<defocus>[-+]?\d+(?:\.\d+)?)\s*um"
_UNITS = {"um": 1.0, "nm": 1e-3}
_STACK_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(frozen=True)
class ImportResult:
    """Where an import wrote its dataset(s) and how many planes and stacks each holds."""

    datasets: dict[str, str]  # role ("tiles", "frames", "images") -> dataset folder
    planes: dict[str, int]
    stacks: dict[str, int]


def _sign_checked(sign: int) -> int:
    if sign not in (1, -1):
        raise DatasetError(f"sign must be +1 or -1, got {sign!r}")
    return sign


def import_jiang(
    src: str | os.PathLike[str], out: str | os.PathLike[str], *, sign: int = 1, progress: bool = False
) -> ImportResult:
    """Import the Jiang et al. (2018) dataset at ``src`` into ``out/tiles`` and ``out/frames``.

    ``sign=-1`` flips the labels if your convention differs from the file names' (see
    ``docs/datasets.md``). Every image inside an ``s{segment}_l{location}`` folder must be named
    ``Seg{id}_defocus{nm}.jpg`` or ``defocus{nm}.jpg``; anything else there is an error (a label
    would be missing), while files outside such folders are ignored and counted in the log.
    """
    sign = _sign_checked(sign)
    root = Path(src)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; give the folder that holds the s{{segment}}_l{{location}} folders")
    tiles: list[tuple[str, str, Path, float]] = []  # (stack, key, file, defocus_um)
    frames: list[tuple[str, str, Path, float]] = []
    ignored = 0
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        folder = _JIANG_FOLDER.match(file.parent.name)
        if folder is None or file.suffix.lower() not in IMAGE_SUFFIXES:
            ignored += 1
            continue
        stack = f"s{int(folder['segment'])}_l{int(folder['location'])}"
        key = file.relative_to(root).as_posix()
        if m := _JIANG_TILE.match(file.name):
            tiles.append((stack, key, file, sign * float(m["nm"]) / 1000.0))
        elif m := _JIANG_FRAME.match(file.name):
            frames.append((stack, key, file, sign * float(m["nm"]) / 1000.0))
        else:
            raise DatasetError(
                f"{file}: the name carries no defocus label; inside {file.parent.name}/ files must be named "
                "Seg{id}_defocus{nm}.jpg (tiles) or defocus{nm}.jpg (full frames), nm a signed integer"
            )
    if not tiles and not frames:
        raise DatasetError(
            f"no labelled images found under {root}: expected folders s{{segment}}_l{{location}}/ with "
            "Seg{id}_defocus{nm}.jpg or defocus{nm}.jpg files"
        )
    if ignored:
        log.info("import_jiang: ignored %d files outside s*_l* folders or not images", ignored)
    out_root = Path(out)
    result = ImportResult(datasets={}, planes={}, stacks={})
    for role, items in (("tiles", tiles), ("frames", frames)):
        if not items:
            continue
        folder = out_root / role
        _write_references(
            folder,
            items,
            z_reference=JIANG_Z_REFERENCE,
            objective=JIANG_OBJECTIVE,
            pixel_size_um=JIANG_PIXEL_SIZE_UM,
            bit_depth=None,
            source={"importer": "jiang2018", "source_folder": str(root.resolve()), "label_sign": sign},
            progress=progress,
        )
        result.datasets[role] = str(folder)
        result.planes[role] = len(items)
        result.stacks[role] = len({s for s, _, _, _ in items})
    return result


def import_folder(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    regex: str = DEFAULT_FOLDER_REGEX,
    unit: str = "um",
    z_reference: str = "external:filenames",
    objective: str = "unknown",
    pixel_size_um: float | None = None,
    bit_depth: int | None = None,
    progress: bool = False,
) -> ImportResult:
    """Import every image below ``src`` whose *file name* matches ``regex`` into dataset ``out``.

    ``regex`` (Python syntax, searched in the file name) must have a named group ``defocus``
    (a signed number in ``unit``: ``"um"`` or ``"nm"``) and may have a group ``stack``; without
    it each sub-folder (relative path) is one field of view. An image whose name does not match
    is an error (its label would be missing). ``bit_depth`` defaults to 8 for uint8 images and
    16 for uint16 (say 12 for 12-bit data stored in uint16).
    """
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise DatasetError(f"--regex {regex!r} is not a valid regular expression ({exc})") from None
    if "defocus" not in pattern.groupindex:
        raise DatasetError(f"--regex {regex!r} needs a named group (?P<defocus>...) that captures the defocus")
    if unit not in _UNITS:
        raise DatasetError(f"unit must be one of {', '.join(_UNITS)}, got {unit!r}")
    check_z_reference(z_reference)
    root = Path(src)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    items: list[tuple[str, str, Path, float]] = []
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        m = pattern.search(file.name)
        if m is None:
            raise DatasetError(
                f"{file}: the file name does not match --regex {regex!r}, so its defocus label is missing; "
                "adjust the expression or move the file out of the folder"
            )
        try:
            value = float(m["defocus"])
        except (TypeError, ValueError):
            captured = m["defocus"]
            raise DatasetError(f"{file}: the group 'defocus' captured {captured!r}, which is not a number") from None
        if "stack" in pattern.groupindex and m["stack"]:
            stack_raw = m["stack"]
        else:
            rel_parent = file.parent.relative_to(root).as_posix()
            stack_raw = "root" if rel_parent == "." else rel_parent.replace("/", ".")
        stack = _STACK_CHARS.sub("_", stack_raw)[:64]
        items.append((stack, file.relative_to(root).as_posix(), file, value * _UNITS[unit]))
    if not items:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    _write_references(
        Path(out),
        items,
        z_reference=z_reference,
        objective=objective,
        pixel_size_um=pixel_size_um,
        bit_depth=bit_depth,
        source={"importer": "folder", "source_folder": str(root.resolve()), "regex": regex, "unit": unit},
        progress=progress,
    )
    return ImportResult(
        datasets={"images": str(out)}, planes={"images": len(items)}, stacks={"images": len({s for s, *_ in items})}
    )


def _write_references(
    folder: Path,
    items: list[tuple[str, str, Path, float]],
    *,
    z_reference: str,
    objective: str,
    pixel_size_um: float | None,
    bit_depth: int | None,
    source: dict[str, object],
    progress: bool,
) -> None:
    """One dataset whose planes reference ``items`` (stack, key, file, defocus_um) in place."""
    if bit_depth is None:
        bit_depth = 16 if read_image_file(items[0][2]).dtype.itemsize == 2 else 8
    writer = ZStackWriter(
        folder,
        z_reference=z_reference,
        objective=objective,
        pixel_size_um=pixel_size_um,
        bit_depth=bit_depth,
        source=source,
        autocommit=False,
    )
    for stack in sorted({s for s, _, _, _ in items}):
        writer.set_stack(stack, x_um=None, y_um=None, focus_z_um=None)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=f"importing {folder.name}", unit="image")
    try:
        for stack, key, file, defocus_um in items:
            writer.reference_file(file, key=key, stack=stack, defocus_um=defocus_um)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    writer.commit(complete=True)
