"""The DALI graph on the CPU: crops match a PIL reference, each image is decoded once."""
import io

import numpy as np
import pytest
from PIL import Image

from engines.models import ModelConfig
from scanner.batching import plan_batches
from scanner.catalog import load_catalog
from scanner.crops import face_roi
from scanner.pipeline import build_pipeline, run_batch

from _data import MULTIFACE, REALORFAKE, gradient_image, write_coco

# mean 0 / std 1/255 turns the normalised output back into grey levels
RAW = ModelConfig(arch="raw", input_size=(64, 48), mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)


def reference_crop(path, bbox, config):
    """PIL: decode, enlarge the box by the margin, clip, resize (bilinear with antialias)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        roi = face_roi(bbox, im.width, im.height, config.crop_margin)
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


def test_eight_face_photo_is_decoded_once_and_every_face_cropped():
    cat = load_catalog(MULTIFACE / "Images")
    crops, decoded = dali_crops(cat, RAW, batch_size=16)
    assert len(crops) == 9  # 8 in group.jpg + grace_hopper
    real_decodes = [s for batch in decoded for s in batch if s != (1, 1, 3)]
    assert real_decodes == [(886, 1280, 3), (600, 512, 3)]
    assert_close_to_reference(cat, crops, RAW)


def test_image_with_more_faces_than_a_batch_is_split_not_dropped():
    cat = load_catalog(MULTIFACE / "Images")
    crops, decoded = dali_crops(cat, RAW, batch_size=3)
    assert len(crops) == 9
    assert all(len(b) <= 3 for b in decoded)


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
