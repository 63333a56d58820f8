"""Catalog: OpenForensics layouts, annotation discovery, path fallback, whole-image mode."""
import shutil

import pytest

from engines.errors import DfscanError
from scanner.catalog import find_annotations, load_catalog

from _data import MULTIFACE, REALORFAKE, write_coco


def test_openforensics_split_finds_its_annotations():
    cat = load_catalog(REALORFAKE / "Images" / "Test-Dev")
    assert cat.annotations == REALORFAKE / "Test-Dev_poly.json"
    assert len(cat.images) == 110 and len(cat.faces) == 110
    assert cat.n_resolved_direct == 110 and cat.n_missing == 0
    assert cat.has_labels
    assert sorted({f.label for f in cat.faces.values()}) == [0, 1]


def test_multiface_annotation_found_beside_images_folder():
    assert find_annotations(MULTIFACE / "Images") == MULTIFACE / "multiface_poly.json"
    cat = load_catalog(MULTIFACE / "Images")
    assert [len(i.face_ids) for i in cat.images.values()] == [6, 1]  # group.jpg, grace_hopper.jpg


def test_reshaped_unzip_falls_back_to_base_name(tmp_path):
    # people unzip OpenForensics as Train/Train/…: file_name 'Images/Val/x.jpg' no longer resolves
    odd = tmp_path / "Val" / "Val"
    odd.mkdir(parents=True)
    for p in sorted((REALORFAKE / "Images" / "Val").glob("*.jpg"))[:5]:
        shutil.copy(p, odd / p.name)
    shutil.copy(REALORFAKE / "Val_poly.json", tmp_path / "Val_poly.json")
    cat = load_catalog(odd, tmp_path / "Val_poly.json")
    assert cat.n_resolved_basename == 5
    assert cat.n_missing == 80 - 5
    assert "5 by base name" in cat.summary()


def test_without_annotations_each_image_is_one_whole_face(tmp_path):
    for p in sorted((REALORFAKE / "Images" / "Val").glob("*.jpg"))[:3]:
        shutil.copy(p, tmp_path / p.name)
    cat = load_catalog(tmp_path)
    assert cat.annotations is None
    assert len(cat.faces) == 3 and all(f.bbox is None and f.label is None for f in cat.faces.values())


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    ('{"annotations": []}', "no 'images' list"),
    ('{"images": [{"id": 1}]}', "lacks field 'file_name'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1}]}',
     "lacks field 'bbox'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]}', "duplicate image id 1"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 3, "image_id": 1, "bbox": [0, 0, 1, 1]}, '
     '{"id": 3, "image_id": 1, "bbox": [0, 0, 2, 2]}]}', "duplicate annotation id 3"),
])
def test_unusable_annotation_files_name_the_file_and_field(tmp_path, content, words):
    ann = tmp_path / "bad_poly.json"
    ann.write_text(content)
    with pytest.raises(DfscanError) as err:
        load_catalog(tmp_path, ann)
    assert str(ann) in str(err.value) and words in str(err.value)


def test_paths_outside_the_roots_are_refused(tmp_path):
    ann = write_coco(tmp_path / "x_poly.json",
                     [{"id": 1, "file_name": "../../etc/passwd"}, {"id": 2, "file_name": "/etc/hostname"}], [])
    cat = load_catalog(tmp_path, ann)
    assert all(img.path is None and img.problem[0] == "path_refused" for img in cat.images.values())
    allowed = load_catalog(tmp_path, ann, allow_outside=True)
    assert allowed.images[2].path is not None and allowed.images[2].problem is None


def test_annotation_naming_a_missing_image_keeps_its_face_with_a_reason(tmp_path):
    ann = write_coco(tmp_path / "x_poly.json", [{"id": 1, "file_name": "a.jpg"}],
                     [{"id": 5, "image_id": 9, "bbox": [0, 0, 4, 4], "category_id": 1}])
    cat = load_catalog(tmp_path, ann)
    assert cat.faces[5].image_id == 9
    assert cat.images[9].problem[0] == "unknown_image" and "image_id 9" in cat.images[9].problem[1]
