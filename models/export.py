"""ONNX export of a checkpoint, verified against torch.

The ONNX graph takes ``input``: (batch, 3, 224, 224) float32 RGB in [0, 1] (batch is dynamic) and
returns ``defocus_um``: (batch,). Normalisation is inside the graph (model buffers). The checkpoint's
meta travels as JSON in ``metadata_props["ldse_meta"]``; name and config in ``["ldse_model"]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import torch

from models.checkpoint import Checkpoint

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "defocus_um"
DEFAULT_TOLERANCE_UM = 1e-3


class ExportError(RuntimeError):
    """The exported ONNX model disagrees with torch or could not be written."""


def export_onnx(ckpt: Checkpoint, path: str | os.PathLike[str], *, verify: bool = True) -> Path:
    """Write ``ckpt`` as ONNX (opset 18, dynamic batch) to ``path``; verify against torch unless told not to."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = ckpt.model.eval().cpu()
    size = int(ckpt.meta.get("patch_size", 224))
    example = torch.rand(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        opset_version=OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"x": {0: batch}},
        external_data=False,
        verbose=False,
    )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    proto = program.model_proto
    _set_metadata(proto, "ldse_meta", json.dumps(ckpt.meta))
    _set_metadata(proto, "ldse_model", json.dumps({"name": ckpt.name, "config": ckpt.config}))
    onnx.checker.check_model(proto)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(proto, tmp)
    os.replace(tmp, path)
    if verify:
        verify_onnx(ckpt, path)
    return path


def verify_onnx(
    ckpt: Checkpoint,
    path: str | os.PathLike[str],
    *,
    batch_sizes: tuple[int, ...] = (1, 3),
    tolerance_um: float = DEFAULT_TOLERANCE_UM,
    seed: int = 0,
) -> float:
    """Run the ONNX file with ONNX Runtime on random batches of each size; return the max |onnx - torch| in um.

    Raises ExportError if an output shape differs (e.g. the batch axis is not dynamic) or the difference
    exceeds ``tolerance_um``.
    """
    import onnxruntime as ort

    size = int(ckpt.meta.get("patch_size", 224))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    model = ckpt.model.eval()
    for n in batch_sizes:
        x = torch.rand(n, 3, size, size, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        if got.shape != expected.shape:
            raise ExportError(f"ONNX output shape {got.shape} != torch {expected.shape} for batch {n}")
        worst = max(worst, float(np.max(np.abs(got - expected))))
    if worst > tolerance_um:
        raise ExportError(f"ONNX and torch differ by {worst:.3g} um (> tolerance {tolerance_um} um)")
    return worst


def read_onnx_meta(path: str | os.PathLike[str]) -> dict[str, object]:
    """The checkpoint meta stored in an exported ONNX file."""
    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if "ldse_meta" not in props:
        raise ExportError(f"{path} has no 'ldse_meta' metadata (not exported by models.export?)")
    return json.loads(props["ldse_meta"])


def _set_metadata(proto: onnx.ModelProto, key: str, value: str) -> None:
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    entry = proto.metadata_props.add()
    entry.key = key
    entry.value = value
