"""dfscan explain: Grad-CAM / saliency maps on the scan's own DALI crops (CPU, real images)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from engines.cam import METHODS, compute_maps
from engines.checkpoint import save_checkpoint
from engines.errors import DfscanError
from engines.config import ModelConfig
from engines.models import create_model, get_model_config, get_model_entry, list_models
from scanner.catalog import load_catalog
from scanner.cli import main
from scanner.explain.explain import select_faces, torch_checkpoint
from scanner.run.job import run_job
from scanner.settings import RunSettings
from scanner.pipeline.cropper import iter_crops

SAMPLES = Path(__file__).resolve().parents[1] / "scanner" / "samples"  # 7 images, 14 faces, labelled


def _checkpoint(path: Path, arch: str, size: tuple[int, int], seed: int) -> Path:
    torch.manual_seed(seed)
    model = create_model(arch, input_size=size)
    return save_checkpoint(path, model, get_model_config(arch).with_input_size(size))


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A real scan of the samples with a small seeded Meso4; threshold 0 makes every face Fake,
    so exactly the Real faces are misclassified."""
    root = tmp_path_factory.mktemp("explain")
    ckpt = _checkpoint(root / "meso.pt", "meso4", (64, 64), seed=0)
    summary = run_job(SAMPLES / "Images", root / "run", ckpt, SAMPLES / "samples_poly.json",
                      RunSettings(batch_size=8, device="cpu", threshold=0.0), progress=False,
                      log=lambda m: None)
    return {"root": root, "ckpt": ckpt, "faces": summary.faces_path,
            "table": pq.read_table(summary.faces_path)}


def _explain(scan, out: Path, *args) -> pq.ParquetFile:
    result = CliRunner().invoke(main, ["explain", str(scan["faces"]), "--out", str(out), "--quiet",
                                       "--device", "cpu", *args])
    assert result.exit_code == 0, result.output
    return pq.read_table(out / "explain.parquet")


def _opens(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()
        return im.size


class TopLeft(nn.Module):
    """A 'detector' that looks only at the top-left quadrant: conv → ReLU → everything else zeroed."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), _Quadrant())

    def forward(self, x):
        fake = self.features(x).mean(dim=(1, 2, 3))
        return torch.stack([-fake, fake], dim=1)


class _Quadrant(nn.Module):
    def forward(self, x):
        mask = torch.zeros_like(x)
        mask[..., : x.shape[-2] // 2, : x.shape[-1] // 2] = 1
        return x * mask


def _sample_crops(size=(75, 61)):
    config = ModelConfig(arch="customcnn", input_size=size)
    catalog = load_catalog(SAMPLES / "Images", SAMPLES / "samples_poly.json")
    crops = [c for b in iter_crops(catalog, config, RunSettings(batch_size=8, device="cpu"))
             for _, c in b.pieces]
    return np.concatenate(crops)


@pytest.mark.parametrize("method", METHODS)
def test_maps_follow_the_region_the_model_reads(method):
    crops = _sample_crops()[:6]
    maps, scores = compute_maps(TopLeft(), crops, method, layer="features.2")
    h, w = crops.shape[2:]
    assert maps.shape == (len(crops), h, w) and np.isfinite(maps).all() and np.isfinite(scores).all()
    assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)
    inside = maps[:, : h // 2 + 1, : w // 2 + 1].sum(axis=(1, 2))  # +1: the 3x3 conv's halo
    assert (inside / maps.sum(axis=(1, 2)) > 0.99).all()


def test_registry_layers_exist():
    with torch.device("meta"):  # no weights allocated: every architecture in a second or two
        for name in list_models():
            entry = get_model_entry(name)
            assert entry.cam_layer, name
            create_model(name).get_submodule(entry.cam_layer)


def test_ids_selection_writes_pngs_and_index(scan, tmp_path):
    index = _explain(scan, tmp_path, "--select", "ids:9,2,5", "--method", "gradcam++", "--method", "saliency")
    assert index.column("face_id").to_pylist() == [9, 9, 2, 2, 5, 5]
    assert index.column("method").to_pylist() == ["gradcam++", "saliency"] * 3
    expected = {r["face_id"]: r for r in scan["table"].to_pylist()}
    for row in index.to_pylist():
        assert row["file"] == expected[row["face_id"]]["file"]
        assert row["label"] == expected[row["face_id"]]["label"]
        # the re-made crop is the scan's crop: the checkpoint scores it as the scan did
        assert row["score_fake"] == pytest.approx(expected[row["face_id"]]["score_fake"], abs=1e-4)
        assert row["score_fake"] == pytest.approx(row["scan_score_fake"], abs=1e-4)
        _opens(row["png"])
    _opens(tmp_path / "contact_sheet.png")
    _opens(tmp_path / "compare.png")  # the two methods side by side


def test_top_fake_and_misclassified_select_the_right_faces(scan, tmp_path):
    ok = [r for r in scan["table"].to_pylist() if r["status"] == "ok"]
    top = _explain(scan, tmp_path / "top", "--select", "top-fake", "--limit", "3", "--method", "saliency")
    best = sorted(ok, key=lambda r: -r["score_fake"])[:3]
    assert top.column("face_id").to_pylist() == [r["face_id"] for r in best]
    wrong = _explain(scan, tmp_path / "wrong", "--select", "misclassified", "--limit", "4")
    real = sorted((r for r in ok if r["label"] == 0), key=lambda r: -r["score_fake"])
    assert len(real) > 4 and wrong.column("face_id").to_pylist() == [r["face_id"] for r in real[:4]]
    assert set(wrong.column("label").to_pylist()) == {0}


def test_compare_grid(scan, tmp_path):
    other = _checkpoint(tmp_path / "cnn.pt", "customcnn", (45, 37), seed=3)
    index = _explain(scan, tmp_path / "out", "--select", "ids:4,7", "--compare", str(other))
    assert index.num_rows == 4 and index.column("face_id").to_pylist() == [4, 7, 4, 7]
    assert index.column("engine").to_pylist() == [str(scan["ckpt"])] * 2 + [str(other)] * 2
    w, h = _opens(tmp_path / "out" / "compare.png")
    assert h > w / 3  # two rows of three cells (crop, meso, cnn)


def test_select_errors(scan):
    with pytest.raises(DfscanError, match="not in the scan"):
        select_faces(scan["table"], "ids:1,999", 5)
    with pytest.raises(DfscanError, match="top-fake, misclassified"):
        select_faces(scan["table"], "worst", 5)


def test_onnx_engine_needs_its_checkpoint(scan, tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"never read: only its name matters")
    with pytest.raises(DfscanError, match=r"model\.onnx: .*no gradients.*--engine MODEL\.pt"):
        torch_checkpoint(onnx)
    result = CliRunner().invoke(main, ["explain", str(scan["faces"]), "--engine", str(onnx),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "no gradients" in result.output
    assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "model.pt").write_bytes(scan["ckpt"].read_bytes())
    assert torch_checkpoint(onnx) == tmp_path / "model.pt"


def test_moved_images_fail_in_one_line(scan, tmp_path):
    moved = tmp_path / "samples_poly.json"  # the annotations without their images
    moved.write_bytes((SAMPLES / "samples_poly.json").read_bytes())
    result = CliRunner().invoke(main, ["explain", str(scan["faces"]), "--select", "ids:1,2", "--quiet",
                                       "--images", str(tmp_path), "--annotations", str(moved),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "none of the 2 chosen faces could be cropped again" in result.output.splitlines()[-1]


# the cheap architectures (big ones share these registered layer names: efficientnet_b1..b7
# "bn2", resnet50 "layer4"); vgg16 and inception_resnet_v2 are too slow to build here
CAM_ARCHS = ("customcnn", "mobilenetv2", "efficientnet_b0", "efficientnet_lite0", "resnet18",
             "squeezenet", "meso4", "mesoinception4", "xception")


@pytest.fixture(scope="module")
def crops96():
    return _sample_crops((96, 96))[:2]


@pytest.mark.parametrize("arch", CAM_ARCHS)
def test_gradcam_explains_the_registered_layer(arch, crops96):
    """Only the top-left cells of the registered layer's output reach the logits (a hook on
    that layer zeroes the rest), so a map made there lies in the top-left of the crop; a map
    made at any earlier layer (the first convolution, say) spreads over the whole face."""
    torch.manual_seed(0)
    size = crops96.shape[2:]
    model = create_model(arch, input_size=size)
    cells = {}

    def keep_top_left(module, args, out):
        h, w = cells["hw"] = out.shape[-2:]
        mask = torch.zeros_like(out)
        mask[..., : max(1, h // 2), : max(1, w // 2)] = 1
        return out.clamp_min(0) * mask  # non-negative evidence: Grad-CAM++ cannot come out empty

    hook = model.get_submodule(get_model_entry(arch).cam_layer).register_forward_hook(keep_top_left)
    try:
        maps, _ = compute_maps(model, crops96, "gradcam++", arch=arch)
    finally:
        hook.remove()
    h, w = cells["hw"]
    assert h > 1 and w > 1, "the layer's output must have room for a region"
    # the region in crop pixels, with half a cell for the upsampling's bilinear halo
    rows, cols = int(np.ceil(size[0] * (max(1, h // 2) + 0.5) / h)), int(np.ceil(size[1] * (max(1, w // 2) + 0.5) / w))
    assert rows * cols < 0.6 * size[0] * size[1]
    total = maps.sum(axis=(1, 2))
    assert (total > 0).all(), "no evidence at all: the test proves nothing"
    inside = maps[:, :rows, :cols].sum(axis=(1, 2))
    assert (inside / total > 0.95).all(), inside / total
