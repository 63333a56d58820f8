"""The synthetic multi-face set: OpenForensics layout, labelled boxes inside images, deterministic."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from engines.errors import DfscanError
from scanner.catalog import load_catalog
from scanner.bench.synthetic import default_face_source, make_synthetic_set


def _check(images_dir, n, lo, hi):
    catalog = load_catalog(images_dir)
    assert len(catalog.images) == n and catalog.n_missing == 0 and catalog.has_labels
    for image in catalog.images.values():
        assert lo <= len(image.face_ids) <= hi
        with Image.open(image.path) as im:
            assert im.format == "JPEG" and 240 <= min(im.size) and max(im.size) <= 1600
            for f in image.face_ids:
                x, y, w, h = catalog.faces[f].bbox
                assert 0 <= x and 0 <= y and x + w <= im.width + 0.1 and y + h <= im.height + 0.1
                assert w >= 16 and h >= 16 and catalog.faces[f].label in (0, 1)
    return catalog


def test_drawn_faces_layout_and_determinism(tmp_path):
    a = make_synthetic_set(tmp_path / "a", 4, seed=3, faces_per_image=(2, 3), source=None)
    b = make_synthetic_set(tmp_path / "b", 4, seed=3, faces_per_image=(2, 3), source=None)
    assert a == tmp_path / "a" / "Images" / "Synthetic"
    _check(a, 4, 2, 3)
    annotations = [(tmp_path / d / "Synthetic_poly.json").read_bytes() for d in ("a", "b")]
    assert annotations[0] == annotations[1]
    for f in sorted(a.iterdir()):
        assert f.read_bytes() == (b / f.name).read_bytes()
    coco = json.loads((tmp_path / "a" / "Synthetic_poly.json").read_text())
    assert {c["id"]: c["name"] for c in coco["categories"]} == {0: "Real", 1: "Fake"}
    assert all(len(a["segmentation"][0]) == 8 and a["iscrowd"] == 0 for a in coco["annotations"])


def test_other_seed_other_set(tmp_path):
    make_synthetic_set(tmp_path / "a", 2, seed=1, source=None)
    make_synthetic_set(tmp_path / "b", 2, seed=2, source=None)
    assert (tmp_path / "a" / "Synthetic_poly.json").read_text() != (tmp_path / "b" / "Synthetic_poly.json").read_text()


@pytest.mark.skipif(default_face_source() is None, reason="no realorfake faces to paste")
def test_real_faces_pasted(tmp_path):
    images = make_synthetic_set(tmp_path, 3, seed=0, faces_per_image=(1, 8))
    catalog = _check(images, 3, 1, 8)
    assert len(catalog.faces) >= 3


def test_bad_arguments(tmp_path):
    with pytest.raises(DfscanError):
        make_synthetic_set(tmp_path, 0)
    with pytest.raises(DfscanError):
        make_synthetic_set(tmp_path, 2, faces_per_image=(3, 2))
