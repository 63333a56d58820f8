"""Hostile annotations: unusable files fail with the file and field named; bad faces get a status."""
import math

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scanner.cli import main
from scanner.run.job import run_job
from scanner.settings import RunSettings

from _data import REALORFAKE, write_coco


@pytest.mark.parametrize("content, words", [
    (b"\x00\x01garbage", "not valid JSON"),
    (b'{"images": "nope"}', "no 'images' list"),
    (b'{"images": [{"file_name": "a.jpg"}]}', "images[0] lacks field 'id'"),
    (b'{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "bbox": [1, 1, 2, 2]}]}',
     "annotations[0] lacks field 'image_id'"),
    (b'{"images": [{"id": 2, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}]}', "duplicate image id 2"),
])
def test_cli_names_the_file_and_field(engines_dir, tmp_path, content, words):
    ann = tmp_path / "broken_poly.json"
    ann.write_bytes(content)
    res = CliRunner().invoke(main, ["run", str(tmp_path), "--annotations", str(ann), "--engine",
                                    str(engines_dir / "m.onnx"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert str(ann) in res.output and words in res.output and "Traceback" not in res.output


def test_bad_boxes_and_odd_records_get_statuses(engines_dir, tmp_path):
    import shutil

    shutil.copy(REALORFAKE / "Images" / "Val" / "00001.jpg", tmp_path / "a.jpg")
    shutil.copy(REALORFAKE / "Images" / "Val" / "00002.jpg", tmp_path / "b.jpg")
    boxes = {1: [100, 100, 200, 200], 2: [math.nan, 1, 2, 3], 3: [-50, -50, -10, 20],
             4: [1e30, 1e30, 1e30, 1e30], 5: [-1e9, -1e9, 2e9, 2e9], 6: [1, 2, 3], 7: "box"}
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}]  # b.jpg: no annotations
    anns = [{"id": k, "image_id": 1, "bbox": b, "category_id": 1} for k, b in boxes.items()]
    anns.append({"id": 8, "image_id": 77, "bbox": [1, 1, 5, 5], "category_id": 0})
    write_coco(tmp_path / "x_poly.json", images, anns)  # json writes math.nan as a bare NaN
    summary = run_job(tmp_path, tmp_path / "out", engines_dir / "m.onnx", tmp_path / "x_poly.json",
                      RunSettings(batch_size=8), progress=False, log=lambda m: None)
    rows = {r["face_id"]: r for r in pq.read_table(summary.faces_path).to_pylist()}
    assert sorted(rows) == list(range(1, 9))  # every annotation, once; b.jpg has none
    status = {f: r["status"] for f, r in rows.items()}
    assert status == {1: "ok", 2: "invalid_box", 3: "empty_box", 4: "box_outside_image",
                      5: "ok", 6: "invalid_box", 7: "invalid_box", 8: "unknown_image"}
    # a huge box covering the image is clipped to it: the whole image is the crop
    assert rows[5]["score_fake"] is not None
