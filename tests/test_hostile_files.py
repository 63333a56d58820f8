"""Hostile image files: each face gets a status and a reason, the rest of the batch is scanned."""
import os

import pyarrow.parquet as pq
import pytest

from scanner.pipeline.batching import prepare_image
from scanner.catalog import load_catalog
from scanner.run.job import run_job
from scanner.settings import RunSettings
from scanner.run.scan import scan

from _data import write_coco
from hostile import sample_image, write_file_cases


def make_corpus(root):
    expected = write_file_cases(root, sample_image())
    names = list(expected)
    images = [{"id": i + 1, "file_name": n} for i, n in enumerate(names)]
    anns = [{"id": i + 1, "image_id": i + 1, "bbox": [10, 10, 100, 90], "category_id": i % 2}
            for i in range(len(names))]
    return write_coco(root / "hostile_poly.json", images, anns), {i + 1: expected[n] for i, n in enumerate(names)}


def test_every_hostile_file_is_reported_and_nothing_is_lost(engines_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    ann, expected = make_corpus(data)
    summary = run_job(data, tmp_path / "out", engines_dir / "m.onnx", ann, RunSettings(batch_size=8),
                      progress=False, log=lambda m: None)
    rows = {r["face_id"]: r for r in pq.read_table(summary.faces_path).to_pylist()}
    assert sorted(rows) == sorted(expected)
    got = {f: rows[f]["status"] for f in rows}
    assert got == expected
    for r in rows.values():
        assert (r["status"] == "ok") == (r["score_fake"] is not None)
        assert (r["status"] == "ok") == (r["error"] is None)
        if r["status"] != "ok":
            assert len(r["error"]) > 5


def test_bomb_limit_is_configurable(tmp_path):
    from hostile import bomb_png

    (tmp_path / "b.png").write_bytes(bomb_png(side=3000))
    ann = write_coco(tmp_path / "b_poly.json", [{"id": 1, "file_name": "b.png"}],
                     [{"id": 1, "image_id": 1, "bbox": [0, 0, 10, 10]}])
    cat = load_catalog(tmp_path, ann)
    _, failed = prepare_image(cat, 1, 1.3, max_pixels=1_000_000)
    assert failed[0].status == "too_large" and "--max-pixels" in failed[0].error
    job, failed = prepare_image(cat, 1, 1.3, max_pixels=10_000_000)
    assert job is not None and not failed


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_permissions(tmp_path):
    path = tmp_path / "locked.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    path.chmod(0)
    ann = write_coco(tmp_path / "l_poly.json", [{"id": 1, "file_name": "locked.jpg"}],
                     [{"id": 1, "image_id": 1, "bbox": [0, 0, 10, 10]}])
    _, failed = prepare_image(load_catalog(tmp_path, ann), 1, 1.3)
    assert failed[0].status == "unreadable_file"


def test_file_vanishing_mid_run(engines_dir, tmp_path):
    from engines.backends import load_engine
    from _data import REALORFAKE
    import shutil

    for n in ("00001.jpg", "00002.jpg", "00003.jpg"):
        shutil.copy(REALORFAKE / "Images" / "Val" / n, tmp_path / n)
    cat = load_catalog(tmp_path)
    (tmp_path / "00002.jpg").unlink()  # after the catalog was made, before it is read
    engine = load_engine(engines_dir / "m.onnx")
    rows = [r for t in scan(cat, engine, RunSettings(batch_size=4)) for r in t.to_pylist()]
    assert [r["status"] for r in rows] == ["ok", "missing_file", "ok"]
    assert "vanished" in rows[1]["error"]


def test_exif_orientation_is_not_applied_boxes_refer_to_stored_pixels(tmp_path):
    from hostile import exif_rotated_jpeg

    (tmp_path / "r.jpg").write_bytes(exif_rotated_jpeg(sample_image()))  # stored 240x180
    ann = write_coco(tmp_path / "r_poly.json", [{"id": 1, "file_name": "r.jpg"}],
                     [{"id": 1, "image_id": 1, "bbox": [200, 10, 39, 20]}])  # only fits unrotated
    job, failed = prepare_image(load_catalog(tmp_path, ann), 1, 1.0)
    assert not failed and job.rois[0] == (200.0, 10.0, 239.0, 30.0)


def test_jpeg_structure_check_passes_every_encoding_and_real_file():
    import io

    from PIL import Image

    from _data import MULTIFACE, REALORFAKE
    from scanner.catalog.jpegcheck import check_jpeg

    im = Image.fromarray(sample_image())
    for kw in ({}, {"progressive": True}, {"optimize": True}, {"subsampling": 0}, {"restart_marker_blocks": 3}):
        for mode in ("RGB", "L", "CMYK"):
            buf = io.BytesIO()
            im.convert(mode).save(buf, format="JPEG", **kw)
            check_jpeg(buf.getvalue())
    for path in [*REALORFAKE.glob("Images/*/*.jpg"), *MULTIFACE.glob("Images/*.jpg")]:
        check_jpeg(path.read_bytes())


@pytest.mark.parametrize("damage, words", [
    (lambda b: b[:2] + b"\xff\x02" + b[4:], "illegal marker"),
    (lambda b: b[:len(b) // 2] + b"\xff\x13" + b[len(b) // 2 + 2:], "illegal marker"),
    (lambda b: b[:-2], "truncated"),
])
def test_jpeg_structure_check_refuses_broken_files(damage, words):
    from hostile import GOOD_JPEG
    from scanner.catalog.jpegcheck import JpegStructureError, check_jpeg

    with pytest.raises(JpegStructureError, match=words):
        check_jpeg(damage(GOOD_JPEG.read_bytes()))


def test_oversubscribed_huffman_table_is_refused_before_dali(engines_dir, tmp_path):
    """A DHT whose sizes all add up but whose code lengths cannot exist: the structure check
    refuses it (libjpeg would fail DALI's whole batch on it), the face is ``corrupt_file``."""
    import shutil

    from hostile import GOOD_JPEG, oversubscribed_huffman_jpeg
    from scanner.catalog.jpegcheck import JpegStructureError, check_jpeg

    data = oversubscribed_huffman_jpeg()
    assert len(data) == len(GOOD_JPEG.read_bytes())
    with pytest.raises(JpegStructureError, match="Huffman table has more codes than bits"):
        check_jpeg(data)
    (tmp_path / "over.jpg").write_bytes(data)
    shutil.copy(GOOD_JPEG, tmp_path / "good.jpg")
    ann = write_coco(tmp_path / "o_poly.json", [{"id": 1, "file_name": "good.jpg"}, {"id": 2, "file_name": "over.jpg"}],
                     [{"id": i, "image_id": i, "bbox": [100, 100, 200, 200], "category_id": 0} for i in (1, 2)])
    summary = run_job(tmp_path, tmp_path / "out", engines_dir / "m.onnx", ann, RunSettings(batch_size=4),
                      progress=False, log=lambda m: None)
    rows = pq.read_table(summary.faces_path).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "corrupt_file"]
    assert "Huffman table has more codes than bits" in rows[1]["error"]
