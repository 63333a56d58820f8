"""dfscan run end to end: Parquet rows and schema, metadata, engines agree, bad inputs survive."""
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from scanner.cli import main
from scanner.job import run_job
from scanner.runner import RunSettings
from scanner.schema import FACES_SCHEMA
from scanner.writers import read_settings

from _data import MULTIFACE, REALORFAKE, gradient_image, write_coco


def quiet_run(images, out, engine, annotations=None, **kw):
    settings = RunSettings(batch_size=kw.pop("batch_size", 32), device="cpu")
    return run_job(images, out, engine, annotations, settings, progress=False, log=lambda m: None, **kw)


def test_test_dev_rows_schema_metadata_and_metrics(engines_dir, tmp_path):
    summary = quiet_run(REALORFAKE / "Images" / "Test-Dev", tmp_path, engines_dir / "m.onnx")
    faces = pq.read_table(tmp_path / "faces.parquet")
    assert faces.schema.remove_metadata() == FACES_SCHEMA
    assert faces.num_rows == 110 and summary.faces_ok == 110
    assert faces.column("face_id").to_pylist() == list(range(1, 111))
    meta = read_settings(tmp_path / "faces.parquet")
    assert meta["arch"] == "mobilenetv2" and meta["backend"] == "onnx" and meta["threshold"] == 0.5
    assert {"nvidia-dali-cuda120", "torch", "onnxruntime"} <= set(meta["versions"])
    metrics = pq.read_table(tmp_path / "metrics.parquet").to_pylist()
    assert metrics[0]["subset"] == "all" and metrics[0]["n"] == 110
    assert (metrics[0]["n_real"], metrics[0]["n_fake"]) == (80, 30)
    assert sum(metrics[0][k] for k in ("tp", "fp", "tn", "fn")) == 110


def test_torch_and_onnx_engines_agree_on_test_dev(engines_dir, tmp_path):
    quiet_run(REALORFAKE / "Images" / "Test-Dev", tmp_path / "onnx", engines_dir / "m.onnx")
    quiet_run(REALORFAKE / "Images" / "Test-Dev", tmp_path / "torch", engines_dir / "m.pt")
    a = pq.read_table(tmp_path / "onnx" / "faces.parquet").column("score_fake").to_numpy()
    b = pq.read_table(tmp_path / "torch" / "faces.parquet").column("score_fake").to_numpy()
    assert len(a) == 110 and np.abs(a - b).max() < 1e-3


def test_challenge_split_gets_a_metrics_row_per_corruption(engines_dir, tmp_path):
    quiet_run(REALORFAKE / "Images" / "Test-Challenge", tmp_path, engines_dir / "m.onnx")
    subsets = pq.read_table(tmp_path / "metrics.parquet").column("subset").to_pylist()
    assert subsets[0] == "all"
    assert set(subsets[1:]) == {"gaussian_noise", "gaussian_blur", "jpeg_q20", "low_contrast", "downscale_x4"}


def test_batching_does_not_change_scores(engines_dir, tmp_path):
    quiet_run(MULTIFACE / "Images", tmp_path / "a", engines_dir / "m.onnx", batch_size=64)
    quiet_run(MULTIFACE / "Images", tmp_path / "b", engines_dir / "m.onnx", batch_size=3)
    a = pq.read_table(tmp_path / "a" / "faces.parquet")
    b = pq.read_table(tmp_path / "b" / "faces.parquet")
    assert a.num_rows == b.num_rows == 9
    assert a.column("face_id").to_pylist() == b.column("face_id").to_pylist()
    np.testing.assert_allclose(a.column("score_fake").to_numpy(), b.column("score_fake").to_numpy(), atol=1e-5)


def write_bad_corpus(root):
    """One good image plus each kind of bad input the run must survive."""
    good = (REALORFAKE / "Images" / "Val" / "00001.jpg").read_bytes()
    (root / "good.jpg").write_bytes(good)
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    img = gradient_image(200, 160, seed=5)
    Image.fromarray(img).save(root / "real_png.png")
    Image.fromarray(img).save(root / "png_named.jpg", format="PNG")
    Image.fromarray(img).convert("L").save(root / "gray.jpg", quality=92)
    Image.fromarray(img).convert("CMYK").save(root / "cmyk.jpg", quality=92)
    # a file that passes the up-front checks but breaks the decoder mid-stream
    from hostile import corrupt_deflate_png
    (root / "corrupt_body.png").write_bytes(corrupt_deflate_png(img))
    names = ["good.jpg", "empty.jpg", "truncated.jpg", "random.jpg", "real_png.png", "png_named.jpg",
             "gray.jpg", "cmyk.jpg", "missing.jpg", "corrupt_body.png", "good.jpg"]
    images = [{"id": i + 1, "file_name": n} for i, n in enumerate(names)]
    anns = [{"id": i + 1, "image_id": i + 1, "bbox": [20, 20, 100, 100], "category_id": i % 2}
            for i in range(len(names))]
    anns += [{"id": 100, "image_id": 1, "bbox": [600, 600, 50, 50], "category_id": 0},  # outside
             {"id": 101, "image_id": 1, "bbox": [10, 10, 0, 40], "category_id": 0},  # zero area
             {"id": 102, "image_id": 1, "bbox": ["a", None, 1, 1], "category_id": 0}]  # not numbers
    return write_coco(root / "bad_poly.json", images, anns)


def test_bad_inputs_get_a_status_and_neighbours_are_scanned(engines_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    ann = write_bad_corpus(data)
    summary = quiet_run(data, tmp_path / "out", engines_dir / "m.onnx", annotations=ann, batch_size=64)
    rows = {r["face_id"]: r for r in pq.read_table(tmp_path / "out" / "faces.parquet").to_pylist()}
    assert len(rows) == 14 == summary.faces
    status = {f: r["status"] for f, r in rows.items()}
    assert status[1] == status[11] == "ok"  # good.jpg, twice
    assert status[2] == "empty_file"
    assert status[3] == "truncated_file"
    assert status[4] == "unsupported_format"
    assert status[5] == status[6] == "ok"  # PNG, and PNG named .jpg
    assert status[7] == status[8] == "ok"  # grayscale and CMYK JPEG
    assert status[9] == "missing_file"
    assert status[10] == "decode_error"
    assert (status[100], status[101], status[102]) == ("box_outside_image", "empty_box", "invalid_box")
    for r in rows.values():
        assert (r["status"] == "ok") == (r["error"] is None) == (r["score_fake"] is not None)
    # the corrupt neighbour did not change the good image's score
    assert rows[1]["score_fake"] == pytest.approx(rows[11]["score_fake"], abs=1e-6)


def test_cli_run_writes_results_and_bad_input_is_one_line(engines_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(MULTIFACE / "Images"), "--engine", str(engines_dir / "m.onnx"),
                               "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "scanned 9 faces in 2 images" in res.output
    assert pq.read_table(tmp_path / "o" / "faces.parquet").num_rows == 9
    again = runner.invoke(main, ["run", str(MULTIFACE / "Images"), "--engine", str(engines_dir / "m.onnx"),
                                 "--out", str(tmp_path / "o"), "--quiet"])
    assert again.exit_code != 0 and "--overwrite" in again.output and "Traceback" not in again.output
    missing = runner.invoke(main, ["run", str(MULTIFACE / "Images"), "--engine", str(tmp_path / "nope.onnx"),
                                   "--out", str(tmp_path / "p")])
    assert missing.exit_code != 0 and "nope.onnx" in missing.output and "not found" in missing.output
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    res = runner.invoke(main, ["run", str(MULTIFACE / "Images"), "--engine", str(bad), "--out", str(tmp_path / "q")])
    assert res.exit_code != 0 and "bad.onnx" in res.output and "Traceback" not in res.output


def test_whole_image_mode_without_annotations(engines_dir, tmp_path):
    data = tmp_path / "plain"
    data.mkdir()
    for p in sorted((REALORFAKE / "Images" / "Val").glob("*.jpg"))[:4]:
        shutil.copy(p, data / p.name)
    summary = quiet_run(data, tmp_path / "out", engines_dir / "m.onnx")
    rows = pq.read_table(tmp_path / "out" / "faces.parquet").to_pylist()
    assert summary.metrics_path is None and len(rows) == 4
    assert all((r["x"], r["y"], r["w"], r["h"]) == (0, 0, 512, 512) and r["label"] is None for r in rows)
