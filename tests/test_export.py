"""ONNX export: matches torch, has a dynamic batch axis, carries the meta; the bundled ONNX matches its .pt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models import build_model
from models.checkpoint import Checkpoint, bundled_checkpoint_path, bundled_near_checkpoint_path, load_checkpoint
from models.export import INPUT_NAME, OPSET, OUTPUT_NAME, ExportError, export_onnx, read_onnx_meta, verify_onnx

META = {
    "patch_size": 224,
    "z_range_um": [-10.0, 10.0],
    "objective": "20x/0.75",
    "pixel_size_um": 0.1725,
    "z_reference": "physical_focal_plane",
    "data": {},
    "metrics": {},
    "version": "test",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Checkpoint, Path]:
    torch.manual_seed(0)
    model = build_model("ldsenet", growth_rate=4, stem_channels=8, block_config=[1, 1]).eval()
    ckpt = Checkpoint(model=model, name="ldsenet", config={"growth_rate": 4}, meta=META)
    path = export_onnx(ckpt, tmp_path_factory.mktemp("onnx") / "m.onnx")
    return ckpt, path


@pytest.mark.slow
def test_onnx_matches_torch_with_dynamic_batch(exported: tuple[Checkpoint, Path]) -> None:
    ckpt, path = exported
    proto = onnx.load(str(path))
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert OPSET >= 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = torch.rand(n, 3, 224, 224)
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        with torch.no_grad():
            want = ckpt.model(x).numpy()
        assert got.shape == (n,)
        assert np.max(np.abs(got - want)) < 1e-4
    assert verify_onnx(ckpt, path, batch_sizes=(2, 7)) < 1e-4
    assert read_onnx_meta(path) == META


@pytest.mark.slow
def test_a_patch_stem_model_exports_and_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    from models.checkpoint import save_checkpoint

    torch.manual_seed(1)
    config = {"stem_patch": 8, "stem_channels": 16, "block_config": [1, 1, 1], "growth_rate": 4}
    model = build_model("ldsenet", **config).eval()
    save_checkpoint(Checkpoint(model=model, name="ldsenet", config=config, meta=META), tmp_path / "p.pt")
    ckpt = load_checkpoint(tmp_path / "p.pt")
    assert ckpt.model.stem_patch == 8 and ckpt.model.stem[0].stride == (8, 8)
    x = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))
    path = export_onnx(ckpt, tmp_path / "p.onnx")
    assert verify_onnx(ckpt, path, batch_sizes=(1, 4)) < 1e-4


@pytest.mark.slow
def test_verify_detects_a_different_model(exported: tuple[Checkpoint, Path]) -> None:
    _ckpt, path = exported
    other = build_model("ldsenet", growth_rate=4, stem_channels=8, block_config=[1, 1]).eval()
    with torch.no_grad():
        other.head.bias.fill_(5.0)
    with pytest.raises(ExportError, match="differ by"):
        verify_onnx(Checkpoint(other, "ldsenet", {}, META), path)


@pytest.mark.parametrize("path", [bundled_checkpoint_path(), bundled_near_checkpoint_path()], ids=["wide", "near"])
def test_bundled_onnx_matches_bundled_checkpoint(path: Path, tmp_path: Path) -> None:
    onnx_path = path.with_suffix(".onnx")
    ckpt = load_checkpoint(path)
    assert onnx_path.is_file()
    assert read_onnx_meta(onnx_path) == ckpt.meta  # exported from this very checkpoint
    assert verify_onnx(ckpt, onnx_path, batch_sizes=(2,)) < 1e-3
    # ... by this very model code: an older export computes the same numbers with a slower graph
    # (before the input normalisation was folded, one more full pass over every tile)
    fresh = export_onnx(ckpt, tmp_path / "fresh.onnx", verify=False)

    def ops(p: Path) -> list[str]:
        return sorted(node.op_type for node in onnx.load(str(p)).graph.node)

    assert ops(onnx_path) == ops(fresh), "re-export it: autofocus export CHECKPOINT --out ONNX"


def test_meta_missing_is_reported(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph([], "empty", [], [])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "plain.onnx")
    with pytest.raises(ExportError, match="no 'ldse_meta'"):
        read_onnx_meta(tmp_path / "plain.onnx")
