"""The DALI graph on the CPU: crops match a PIL reference, each image is decoded once."""

import numpy as np
import pytest
from PIL import Image

from engines.config import ModelConfig
from scanner.pipeline.batching import plan_batches
from scanner.catalog import load_catalog
from scanner.pipeline.geometry import face_roi
from scanner.pipeline.graphs import build_pipeline, run_batch

from _data import MULTIFACE, REALORFAKE, gradient_image, write_coco

# mean 0 / std 1/255 turns the normalised output back into grey levels
RAW = ModelConfig(arch="raw", input_size=(64, 48), mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)


def reference_roi(bbox, width, height, margin):
    """The crop convention written out independently of ``face_roi``: centre, margin, clip."""
    x, y, w, h = bbox
    cx, cy = x + w / 2, y + h / 2
    return (max(0.0, cx - w * margin / 2), max(0.0, cy - h * margin / 2),
            min(float(width), cx + w * margin / 2), min(float(height), cy + h * margin / 2))


def reference_crop(path, bbox, config):
    """PIL: decode, enlarge the box by the margin about its centre, clip, resize (bilinear with
    antialias). Shares no code with the pipeline: a bug in ``face_roi`` cannot hide here."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        roi = reference_roi(bbox, im.width, im.height, config.crop_margin)
        h, w = config.input_size
        return np.asarray(im.resize((w, h), Image.BILINEAR, box=roi), dtype=np.float32)


def dali_crops(catalog, config, batch_size=16):
    pipe = build_pipeline(config, batch_size, "cpu", with_images=True)
    crops, decoded = {}, []
    for planned in plan_batches(catalog, batch_size, config.crop_margin):
        faces, images = run_batch(pipe, planned.face_batch())
        decoded.append([images.at(i).shape for i in range(len(images))])
        for f, arr in zip(planned.face_ids, np.array(faces.as_tensor())):
            crops[f] = arr.transpose(1, 2, 0)
    return crops, decoded


def assert_close_to_reference(catalog, crops, config):
    for f, crop in crops.items():
        face = catalog.faces[f]
        ref = reference_crop(catalog.images[face.image_id].path, face.bbox, config)
        assert crop.shape == ref.shape
        diff = np.abs(crop - ref)
        # within ±2 grey levels, allowing a sliver of pixels on hard edges
        assert np.percentile(diff, 99.5) <= 2.0, (f, diff.max(), diff.mean())
        assert diff.mean() < 0.6


def test_crops_match_reference_on_realorfake():
    cat = load_catalog(REALORFAKE / "Images" / "Val")
    cat = cat.subset(list(cat.images)[:12])
    crops, _ = dali_crops(cat, RAW)
    assert len(crops) == 12
    assert_close_to_reference(cat, crops, RAW)


def test_group_photo_is_decoded_once_and_every_face_cropped():
    cat = load_catalog(MULTIFACE / "Images")
    crops, decoded = dali_crops(cat, RAW, batch_size=16)
    assert len(crops) == 7  # 6 in group.jpg + grace_hopper
    real_decodes = [s for batch in decoded for s in batch if s != (1, 1, 3)]
    assert real_decodes == [(886, 1280, 3), (600, 512, 3)]
    assert_close_to_reference(cat, crops, RAW)


@pytest.mark.parametrize("batch_size", [4, 5])  # 6 faces in group.jpg: split 4+2 and 5+1
def test_image_with_more_faces_than_a_batch_is_split_not_dropped(batch_size):
    cat = load_catalog(MULTIFACE / "Images")
    crops, decoded = dali_crops(cat, RAW, batch_size=batch_size)
    assert len(crops) == 7
    assert all(len(b) <= batch_size for b in decoded)
    real_decodes = [s for batch in decoded for s in batch if s != (1, 1, 3)]
    assert real_decodes == [(886, 1280, 3), (886, 1280, 3), (600, 512, 3)]  # once per part
    # every face of every part is its own box, not one of the first part's boxes
    assert_close_to_reference(cat, crops, RAW)
    faces = sorted(crops)
    assert all(np.abs(crops[a] - crops[b]).mean() > 5 for a, b in zip(faces, faces[1:]))


@pytest.mark.parametrize("bbox, size, margin, expected", [
    ([100, 50, 40, 20], (640, 480), 1.3, (94.0, 47.0, 146.0, 73.0)),  # grown about the centre (120, 60)
    ([100, 50, 40, 20], (640, 480), 1.0, (100.0, 50.0, 140.0, 70.0)),  # margin 1: the box itself
    ([0, 100, 40, 40], (640, 480), 1.3, (0.0, 94.0, 46.0, 146.0)),  # clipped at the left border
    ([600, 100, 40, 40], (640, 480), 1.3, (594.0, 94.0, 640.0, 146.0)),  # right border
    ([300, 0, 40, 40], (640, 480), 1.3, (294.0, 0.0, 346.0, 46.0)),  # top border
    ([300, 440, 40, 40], (640, 480), 1.3, (294.0, 434.0, 346.0, 480.0)),  # bottom border
    ([-10, -10, 700, 500], (640, 480), 1.3, (0.0, 0.0, 640.0, 480.0)),  # larger than the image
    (None, (97, 131), 1.3, (0.0, 0.0, 97.0, 131.0)),  # no box: the whole image
])
def test_face_roi_against_hand_computed_windows(bbox, size, margin, expected):
    assert face_roi(bbox, *size, margin) == pytest.approx(expected)


@pytest.mark.parametrize("size", [(97, 131), (301, 57)])
def test_odd_sizes_and_boxes_on_the_border(tmp_path, size):
    w, h = size
    path = tmp_path / "odd.jpg"
    Image.fromarray(gradient_image(w, h)).save(path, quality=95)
    boxes = [[0, 0, w / 3, h / 3], [w * 0.7, h * 0.6, w * 0.5, h * 0.6], [-5, h / 2, 20, 15], [1, 1, w - 2, h - 2]]
    ann = write_coco(tmp_path / "odd_poly.json", [{"id": 1, "file_name": "odd.jpg"}],
                     [{"id": k + 1, "image_id": 1, "bbox": b, "category_id": 0} for k, b in enumerate(boxes)])
    cat = load_catalog(tmp_path, ann)
    crops, _ = dali_crops(cat, RAW)
    assert len(crops) == 4
    assert_close_to_reference(cat, crops, RAW)


def test_normalisation_uses_the_models_mean_and_std():
    config = ModelConfig(arch="x", input_size=(32, 32), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    cat = load_catalog(REALORFAKE / "Images" / "Val")
    cat = cat.subset(list(cat.images)[:2])
    crops, _ = dali_crops(cat, config)
    raw, _ = dali_crops(cat, RAW.with_input_size((32, 32)))
    for f in crops:
        expect = (raw[f] / 255.0 - np.array(config.mean)) / np.array(config.std)
        np.testing.assert_allclose(crops[f], expect, atol=1e-3)


def test_png_input_is_decoded(tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray(gradient_image(120, 90, seed=3)).save(path)
    ann = write_coco(tmp_path / "p_poly.json", [{"id": 1, "file_name": "face.png"}],
                     [{"id": 1, "image_id": 1, "bbox": [10, 10, 60, 50], "category_id": 1}])
    cat = load_catalog(tmp_path, ann)
    crops, _ = dali_crops(cat, RAW)
    assert_close_to_reference(cat, crops, RAW)
