"""The on-disk z-stack dataset format: one OME-TIFF per plane plus a JSON manifest.

Layout of a dataset folder::

    DIR/manifest.json            dataset fields, stacks (XY positions) and plane records
    DIR/planes/000000.ome.tif    one H x W x 3 RGB plane (uint8 or uint16) per file

Every file is readable with plain ``tifffile`` and ``json``. Writes are atomic: each plane is
written to a temporary file and moved into place with ``os.replace``, then the manifest is
rewritten the same way. A plane file counts only once the manifest lists it, so an interrupted
acquisition leaves a readable dataset, and resuming it overwrites any unlisted leftover file.

``z_reference`` says how defocus 0 was defined (see ``Z_REFERENCE_KINDS``). Datasets with
different references must not be mixed silently: ``open_datasets`` refuses it unless allowed.
The full field list is in ``docs/datasets.md``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import tifffile

from models.errors import DatasetError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Z_REFERENCE_KINDS",
    "PlaneRecord",
    "StackInfo",
    "ZStackDataset",
    "ZStackWriter",
    "atomic_write_bytes",
    "check_z_reference",
    "common_z_reference",
    "find_datasets",
    "open_datasets",
    "read_image_file",
]

FORMAT = "ldse-zstack"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PLANES_DIR = "planes"

# How z = 0 was defined. "sharpness_peak" and "external" carry a detail after a colon:
#   physical_focal_plane           the simulator's true focal plane (SimulatedMicroscope.true_defocus_um)
#   sharpness_peak:<measure>       the peak of a focus-measure scan, e.g. sharpness_peak:variance_of_laplacian
#   external:<source>              labels taken from an imported dataset, e.g. external:jiang2018
Z_REFERENCE_KINDS = ("physical_focal_plane", "sharpness_peak", "external")
_Z_DETAIL = re.compile(r"^[A-Za-z0-9_.\-]+$")
_STACK_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def check_z_reference(z_reference: str) -> str:
    """Return ``z_reference`` if it is well formed, else raise ``DatasetError`` saying what is allowed."""
    allowed = "'physical_focal_plane', 'sharpness_peak:<measure>' or 'external:<source>'"
    if not isinstance(z_reference, str):
        raise DatasetError(f"z_reference must be a string ({allowed}), got {z_reference!r}")
    kind, _, detail = z_reference.partition(":")
    if kind == "physical_focal_plane" and not detail:
        return z_reference
    if kind in ("sharpness_peak", "external") and detail and _Z_DETAIL.match(detail):
        return z_reference
    raise DatasetError(f"z_reference {z_reference!r} is not allowed; use {allowed}")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _finite(label: str, value: object, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DatasetError(f"{label} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PlaneRecord:
    """One plane: where its file is, which stack (XY position) it belongs to, and its labels.

    ``defocus_um`` is signed, relative to the dataset's ``z_reference`` (> 0: the specimen lies
    beyond the focal plane). ``z_um`` is the focus stage position it was taken at (None when
    imported), ``time_s`` seconds since the dataset was created (the simulator's clock for
    simulated data), ``key`` a name unique in the dataset that lets a resumed acquisition skip it.
    """

    index: int
    key: str
    file: str
    stack: str
    defocus_um: float
    z_um: float | None
    x_um: float | None
    y_um: float | None
    time_s: float | None
    timestamp: str
    exposure_ms: float | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> PlaneRecord:
        try:
            record = cls(
                index=int(data["index"]),
                key=str(data["key"]),
                file=str(data["file"]),
                stack=str(data["stack"]),
                defocus_um=float(data["defocus_um"]),
                z_um=None if data.get("z_um") is None else float(data["z_um"]),
                x_um=None if data.get("x_um") is None else float(data["x_um"]),
                y_um=None if data.get("y_um") is None else float(data["y_um"]),
                time_s=None if data.get("time_s") is None else float(data["time_s"]),
                timestamp=str(data.get("timestamp", "")),
                exposure_ms=None if data.get("exposure_ms") is None else float(data["exposure_ms"]),
            )
        except KeyError as exc:
            raise DatasetError(f"{where}: plane record lacks the required field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: plane record has a field of the wrong type ({exc})") from None
        if not math.isfinite(record.defocus_um):
            raise DatasetError(f"{where}: defocus_um must be finite, got {record.defocus_um}")
        return record


@dataclass(frozen=True)
class StackInfo:
    """One stack: a field of view (XY position) swept through z.

    ``focus_z_um`` is the focus-stage position taken as defocus 0 (None when unknown);
    ``focus_score`` the sharpness there when the reference is a sharpness peak.
    """

    name: str
    x_um: float | None
    y_um: float | None
    focus_z_um: float | None
    focus_score: float | None = None

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any], where: str) -> StackInfo:
        try:
            return cls(
                name=name,
                x_um=None if data.get("x_um") is None else float(data["x_um"]),
                y_um=None if data.get("y_um") is None else float(data["y_um"]),
                focus_z_um=None if data.get("focus_z_um") is None else float(data["focus_z_um"]),
                focus_score=None if data.get("focus_score") is None else float(data["focus_score"]),
            )
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: stack {name!r} has a field of the wrong type ({exc})") from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: never a half file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_image(image: object, where: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise DatasetError(f"{where}: expected an H x W x 3 uint8/uint16 array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise DatasetError(f"{where}: expected an H x W x 3 RGB array, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{where}: expected dtype uint8 or uint16, got {image.dtype}")
    return image


class ZStackWriter:
    """Writes (or, with ``resume=True``, continues) a z-stack dataset folder.

    ``bit_depth`` is the number of significant bits (8 for uint8; 10..16 stored as uint16);
    ``source`` a JSON-friendly description of where the data came from (simulator settings,
    hardware description, importer). With ``autocommit`` (the default) the manifest is rewritten
    after every plane, so an interruption loses nothing that ``write_plane`` returned; bulk
    writers (``autofocus dataset synth``) turn it off and call ``commit()`` after each stack.
    Writing a ``key`` that the dataset already has is an error (no duplicate planes).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        z_reference: str,
        objective: str,
        pixel_size_um: float | None,
        bit_depth: int,
        source: Mapping[str, Any] | None = None,
        resume: bool = False,
        autocommit: bool = True,
    ) -> None:
        self.path = Path(path)
        self.autocommit = autocommit
        z_reference = check_z_reference(z_reference)
        pixel_size = _finite("pixel_size_um", pixel_size_um, optional=True)
        if pixel_size is not None and pixel_size <= 0:
            raise DatasetError(f"pixel_size_um must be positive (or None when unknown), got {pixel_size_um!r}")
        if isinstance(bit_depth, bool) or not isinstance(bit_depth, int) or not 1 <= bit_depth <= 16:
            raise DatasetError(f"bit_depth must be an integer 1..16, got {bit_depth!r}")
        if not isinstance(objective, str) or not objective:
            raise DatasetError(f"objective must be a non-empty string, got {objective!r}")
        manifest_path = self.path / MANIFEST_NAME
        if manifest_path.exists():
            if not resume:
                raise DatasetError(
                    f"{self.path} already holds a dataset; pass resume=True (CLI: --resume) to continue it, "
                    "or choose a new folder"
                )
            existing = ZStackDataset(self.path)
            for label, mine, theirs in (
                ("z_reference", z_reference, existing.z_reference),
                ("objective", objective, existing.objective),
                ("pixel_size_um", pixel_size, existing.pixel_size_um),
                ("bit_depth", bit_depth, existing.bit_depth),
            ):
                if mine != theirs:
                    raise DatasetError(
                        f"cannot resume {self.path}: its {label} is {theirs!r} but this acquisition has {mine!r}"
                    )
            self._manifest = existing.manifest
            self._planes: list[dict[str, Any]] = list(self._manifest["planes"])
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise DatasetError(
                    f"{self.path} exists, is not empty and holds no {MANIFEST_NAME}; choose a new folder"
                )
            (self.path / PLANES_DIR).mkdir(parents=True, exist_ok=True)
            now = _now_iso()
            self._manifest = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "dataset_id": uuid.uuid4().hex,
                "created": now,
                "updated": now,
                "complete": False,
                "z_reference": z_reference,
                "objective": objective,
                "pixel_size_um": pixel_size,
                "bit_depth": bit_depth,
                "dtype": None,
                "frame_shape": None,
                "source": dict(source or {}),
                "stacks": {},
                "planes": [],
            }
            self._planes = []
            self.commit()
        self._keys = {p["key"] for p in self._planes}
        self._created = datetime.fromisoformat(self._manifest["created"])

    # -- state -------------------------------------------------------------------------------
    @property
    def dataset_id(self) -> str:
        return str(self._manifest["dataset_id"])

    @property
    def keys(self) -> frozenset[str]:
        """Keys of the planes written so far (committed or not)."""
        return frozenset(self._keys)

    @property
    def stacks(self) -> dict[str, StackInfo]:
        """The stacks recorded so far (a resumed run reuses their ``focus_z_um``)."""
        where = str(self.path)
        return {name: StackInfo.from_json(name, data, where) for name, data in self._manifest["stacks"].items()}

    def has_plane(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._planes)

    # -- writing -----------------------------------------------------------------------------
    def set_stack(
        self,
        name: str,
        *,
        x_um: float | None,
        y_um: float | None,
        focus_z_um: float | None,
        focus_score: float | None = None,
    ) -> None:
        """Record (or update) a stack: its XY position and the stage z taken as defocus 0."""
        if not isinstance(name, str) or not _STACK_NAME.match(name):
            raise DatasetError(f"stack name {name!r} is not allowed: use 1-64 letters, digits, '_', '-' or '.'")
        info = StackInfo(
            name=name,
            x_um=_finite("x_um", x_um, optional=True),
            y_um=_finite("y_um", y_um, optional=True),
            focus_z_um=_finite("focus_z_um", focus_z_um, optional=True),
            focus_score=_finite("focus_score", focus_score, optional=True),
        )
        data = asdict(info)
        del data["name"]
        self._manifest["stacks"][name] = data
        if self.autocommit:
            self.commit()

    def _check_new_plane(self, image: np.ndarray, key: str, stack: str) -> None:
        """Refuse a duplicate key, an unknown stack, or a shape/dtype/bit depth that does not match."""
        if not isinstance(key, str) or not key:
            raise DatasetError(f"plane key must be a non-empty string, got {key!r}")
        if key in self._keys:
            raise DatasetError(f"{self.path}: plane {key!r} is already in the dataset; a resumed run must skip it")
        if stack not in self._manifest["stacks"]:
            raise DatasetError(f"{self.path}: stack {stack!r} is unknown; call set_stack({stack!r}, ...) first")
        shape = list(image.shape)
        if self._manifest["frame_shape"] is None:
            self._manifest["frame_shape"] = shape
            self._manifest["dtype"] = str(image.dtype)
        elif shape != self._manifest["frame_shape"] or str(image.dtype) != self._manifest["dtype"]:
            raise DatasetError(
                f"plane {key!r}: shape {tuple(shape)} {image.dtype} differs from the dataset's "
                f"{tuple(self._manifest['frame_shape'])} {self._manifest['dtype']}; all planes must match"
            )
        bits = int(self._manifest["bit_depth"])
        if image.dtype == np.uint8 and bits > 8:
            raise DatasetError(f"plane {key!r}: uint8 data cannot carry the dataset's bit_depth {bits}")
        if bits < image.dtype.itemsize * 8 and int(image.max()) >= (1 << bits):
            raise DatasetError(f"plane {key!r}: values up to {int(image.max())} exceed the dataset's bit_depth {bits}")

    def _append(
        self,
        *,
        file: str,
        key: str,
        stack: str,
        defocus_um: float,
        z_um: float | None,
        x_um: float | None,
        y_um: float | None,
        time_s: float | None,
        exposure_ms: float | None,
    ) -> PlaneRecord:
        record = PlaneRecord(
            index=len(self._planes),
            key=key,
            file=file,
            stack=stack,
            defocus_um=defocus_um,
            z_um=_finite("z_um", z_um, optional=True),
            x_um=_finite("x_um", x_um, optional=True),
            y_um=_finite("y_um", y_um, optional=True),
            time_s=_finite("time_s", time_s, optional=True),
            timestamp=_now_iso(),
            exposure_ms=_finite("exposure_ms", exposure_ms, optional=True),
        )
        self._planes.append(asdict(record))
        self._keys.add(key)
        if self.autocommit:
            self.commit()
        return record

    def write_plane(
        self,
        image: np.ndarray,
        *,
        key: str,
        stack: str,
        defocus_um: float,
        z_um: float | None = None,
        x_um: float | None = None,
        y_um: float | None = None,
        time_s: float | None = None,
        exposure_ms: float | None = None,
    ) -> PlaneRecord:
        """Write one plane atomically and record it (``set_stack`` must have named ``stack``).

        ``time_s`` defaults to the wall-clock seconds since the dataset was created.
        """
        image = _check_image(image, f"plane {key!r}")
        defocus = float(_finite("defocus_um", defocus_um))  # type: ignore[arg-type]
        self._check_new_plane(image, key, stack)
        rel = f"{PLANES_DIR}/{len(self._planes):06d}.ome.tif"
        target = self.path / rel
        tmp = target.with_name(f".{target.name}.tmp")
        metadata: dict[str, Any] = {"axes": "YXS"}
        if self._manifest["pixel_size_um"] is not None:
            metadata.update(
                PhysicalSizeX=self._manifest["pixel_size_um"],
                PhysicalSizeXUnit="µm",
                PhysicalSizeY=self._manifest["pixel_size_um"],
                PhysicalSizeYUnit="µm",
            )
        if z_um is not None:
            metadata["Plane"] = {"PositionZ": [float(z_um)], "PositionZUnit": ["µm"]}
        try:
            tifffile.imwrite(tmp, image, photometric="rgb", ome=True, metadata=metadata)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if time_s is None:
            time_s = (datetime.now(UTC) - self._created).total_seconds()
        return self._append(
            file=rel,
            key=key,
            stack=stack,
            defocus_um=defocus,
            z_um=z_um,
            x_um=x_um,
            y_um=y_um,
            time_s=time_s,
            exposure_ms=exposure_ms,
        )

    def reference_file(
        self,
        file: str | os.PathLike[str],
        *,
        key: str,
        stack: str,
        defocus_um: float,
        z_um: float | None = None,
        x_um: float | None = None,
        y_um: float | None = None,
    ) -> PlaneRecord:
        """Record an existing image file as a plane without copying it (importers).

        The file is decoded once here (``read_image_file``) to check it; the manifest stores its
        path relative to the dataset folder when it lies inside it, else its absolute path.
        """
        path = Path(file).resolve()
        image = read_image_file(path)
        defocus = float(_finite("defocus_um", defocus_um))  # type: ignore[arg-type]
        self._check_new_plane(image, key, stack)
        root = self.path.resolve()
        stored = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        return self._append(
            file=stored,
            key=key,
            stack=stack,
            defocus_um=defocus,
            z_um=z_um,
            x_um=x_um,
            y_um=y_um,
            time_s=None,
            exposure_ms=None,
        )

    def commit(self, *, complete: bool | None = None) -> None:
        """Rewrite the manifest atomically; ``complete=True`` marks a finished acquisition."""
        self._manifest["planes"] = self._planes
        self._manifest["updated"] = _now_iso()
        if complete is not None:
            self._manifest["complete"] = bool(complete)
        data = json.dumps(self._manifest, indent=1, ensure_ascii=False).encode("utf-8")
        atomic_write_bytes(self.path / MANIFEST_NAME, data)

    def __enter__(self) -> ZStackWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.commit()


class ZStackDataset:
    """A z-stack dataset folder opened for reading; planes are decoded on demand."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise DatasetError(f"{self.path} is not a z-stack dataset: {MANIFEST_NAME} is missing")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{manifest_path} is not valid JSON ({exc})") from None
        where = str(manifest_path)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise DatasetError(f"{where}: 'format' must be {FORMAT!r}; this is not a z-stack manifest")
        if manifest.get("version") != FORMAT_VERSION:
            raise DatasetError(f"{where}: version {manifest.get('version')!r} is not supported (only {FORMAT_VERSION})")
        for field in ("dataset_id", "z_reference", "objective", "pixel_size_um", "bit_depth", "stacks", "planes"):
            if field not in manifest:
                raise DatasetError(f"{where}: the required field {field!r} is missing")
        try:
            self.z_reference = check_z_reference(manifest["z_reference"])
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        self.manifest: dict[str, Any] = manifest
        self.dataset_id = str(manifest["dataset_id"])
        self.objective = str(manifest["objective"])
        self.pixel_size_um = None if manifest["pixel_size_um"] is None else float(manifest["pixel_size_um"])
        self.bit_depth = int(manifest["bit_depth"])
        self.complete = bool(manifest.get("complete", False))
        self.source: dict[str, Any] = dict(manifest.get("source") or {})
        self.dtype = None if manifest.get("dtype") is None else np.dtype(manifest["dtype"])
        shape = manifest.get("frame_shape")
        self.frame_shape = None if shape is None else tuple(int(v) for v in shape)
        if not isinstance(manifest["stacks"], dict) or not isinstance(manifest["planes"], list):
            raise DatasetError(f"{where}: 'stacks' must be an object and 'planes' a list")
        self.stacks: dict[str, StackInfo] = {
            name: StackInfo.from_json(name, data, where) for name, data in manifest["stacks"].items()
        }
        self.planes: list[PlaneRecord] = [PlaneRecord.from_json(p, where) for p in manifest["planes"]]
        for p in self.planes:
            if p.stack not in self.stacks:
                raise DatasetError(f"{where}: plane {p.key!r} names the unknown stack {p.stack!r}")

    def __len__(self) -> int:
        return len(self.planes)

    def __iter__(self) -> Iterator[PlaneRecord]:
        return iter(self.planes)

    def __repr__(self) -> str:
        return f"ZStackDataset({str(self.path)!r}, planes={len(self.planes)}, z_reference={self.z_reference!r})"

    def read_plane(self, plane: int | PlaneRecord) -> np.ndarray:
        """Decode one plane: ``H x W x 3`` in the dataset's dtype; checks shape and dtype."""
        record = self.planes[plane] if isinstance(plane, int) else plane
        file = self.path / record.file  # an absolute record.file replaces the folder
        if not file.is_file():
            raise DatasetError(f"{self.path}: plane file {record.file} (plane {record.key!r}) is missing")
        image = read_image_file(file)
        if image.ndim != 3 or image.shape[2] != 3 or (self.frame_shape is not None and image.shape != self.frame_shape):
            raise DatasetError(
                f"{file}: shape {image.shape} differs from the manifest's frame_shape {self.frame_shape}"
            )
        if self.dtype is not None and image.dtype != self.dtype:
            raise DatasetError(f"{file}: dtype {image.dtype} differs from the manifest's dtype {self.dtype}")
        return image

    def defocus_range_um(self) -> tuple[float, float] | None:
        if not self.planes:
            return None
        values = [p.defocus_um for p in self.planes]
        return min(values), max(values)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description for ``autofocus dataset info``."""
        rng = self.defocus_range_um()
        return {
            "path": str(self.path),
            "dataset_id": self.dataset_id,
            "z_reference": self.z_reference,
            "objective": self.objective,
            "pixel_size_um": self.pixel_size_um,
            "bit_depth": self.bit_depth,
            "dtype": None if self.dtype is None else str(self.dtype),
            "frame_shape": None if self.frame_shape is None else list(self.frame_shape),
            "stacks": len(self.stacks),
            "planes": len(self.planes),
            "defocus_range_um": None if rng is None else list(rng),
            "complete": self.complete,
            "created": self.manifest.get("created"),
            "updated": self.manifest.get("updated"),
            "source": self.source,
        }


IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def read_image_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a TIFF (tifffile) or PNG/JPEG/BMP (OpenCV) to ``H x W x 3`` RGB uint8/uint16.

    Grey images are repeated into three channels and an alpha channel is dropped; anything else
    (other dtypes, other channel counts, an undecodable file) is a ``DatasetError`` naming the file.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DatasetError(f"{file}: unsupported image type {suffix!r}; allowed: {', '.join(IMAGE_SUFFIXES)}")
    if not file.is_file():
        raise DatasetError(f"{file} does not exist")
    if suffix in (".tif", ".tiff"):
        try:
            image = tifffile.imread(file)
        except Exception as exc:  # tifffile raises many types for damaged files
            raise DatasetError(f"{file} is not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    else:
        import cv2

        image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DatasetError(f"{file} is not a readable {suffix[1:].upper()} image (OpenCV could not decode it)")
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise DatasetError(f"{file}: shape {image.shape} is not a grey or RGB image")
    if image.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{file}: dtype {image.dtype} is not supported; planes must be uint8 or uint16")
    return np.ascontiguousarray(image)


def find_datasets(root: str | os.PathLike[str]) -> list[Path]:
    """Dataset folders at or below ``root`` (a folder holding ``manifest.json``), sorted."""
    root_path = Path(root)
    if not root_path.exists():
        raise DatasetError(f"{root_path} does not exist")
    if (root_path / MANIFEST_NAME).is_file():
        return [root_path]
    found = sorted(p.parent for p in root_path.rglob(MANIFEST_NAME))
    if not found:
        raise DatasetError(f"no z-stack dataset ({MANIFEST_NAME}) found at or below {root_path}")
    return found


def common_z_reference(datasets: Sequence[ZStackDataset], *, allow_mixed: bool = False) -> str:
    """The one z reference shared by ``datasets``; several are an error unless ``allow_mixed``.

    With ``allow_mixed`` the result is ``"mixed:<ref>+<ref>..."`` so reports show the mix.
    """
    refs = sorted({d.z_reference for d in datasets})
    if not refs:
        raise DatasetError("no datasets given")
    if len(refs) == 1:
        return refs[0]
    if not allow_mixed:
        detail = "; ".join(f"{d.path}: {d.z_reference}" for d in datasets)
        raise DatasetError(
            f"the datasets define defocus 0 differently ({', '.join(refs)}): {detail}. For phase specimens the "
            "sharpness peak lies about 0.5 um off the physical focal plane; use datasets with one z reference, "
            "or allow mixing explicitly (allow_mixed_z_reference=True / --allow-mixed-z-reference)"
        )
    return "mixed:" + "+".join(refs)


def open_datasets(
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str], *, allow_mixed_z_reference: bool = False
) -> list[ZStackDataset]:
    """Open every dataset at or below each path; refuse mixed z references unless allowed."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    datasets: list[ZStackDataset] = []
    seen: set[str] = set()
    for p in paths:
        for folder in find_datasets(p):
            ds = ZStackDataset(folder)
            if ds.dataset_id in seen:
                continue
            seen.add(ds.dataset_id)
            datasets.append(ds)
    common_z_reference(datasets, allow_mixed=allow_mixed_z_reference)
    return datasets
