"""dfscan run end to end: Parquet rows and schema, metadata, engines agree, bad inputs survive."""
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from scanner.cli import main
from scanner.run.job import run_job
from scanner.settings import RunSettings
from scanner.output.schema import FACES_SCHEMA
from engines.files import read_settings

from _data import MULTIFACE, REALORFAKE, assert_scores_spread, gradient_image, write_coco


def quiet_run(images, out, engine, annotations=None, **kw):
    settings = RunSettings(batch_size=kw.pop("batch_size", 32), device="cpu", threshold=kw.pop("threshold", 0.5),
                           backend=kw.pop("backend", None))
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
    # the confusion counts and rates, recomputed here from the rows: Fake (1) is the positive class
    rows = faces.to_pylist()
    assert_scores_spread([r["score_fake"] for r in rows])
    assert all(r["pred"] == int(r["score_fake"] >= 0.5) for r in rows)
    tp = sum(r["label"] == 1 and r["score_fake"] >= 0.5 for r in rows)
    fp = sum(r["label"] == 0 and r["score_fake"] >= 0.5 for r in rows)
    fn = sum(r["label"] == 1 and r["score_fake"] < 0.5 for r in rows)
    tn = 110 - tp - fp - fn
    m = metrics[0]
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert 0 < tp < 30 and 0 < fp < 80  # the varying engine makes every cell count
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["accuracy"] == pytest.approx((tp + tn) / 110)


def test_torch_and_onnx_engines_agree_on_test_dev(engines_dir, tmp_path):
    quiet_run(REALORFAKE / "Images" / "Test-Dev", tmp_path / "onnx", engines_dir / "m.onnx")
    quiet_run(REALORFAKE / "Images" / "Test-Dev", tmp_path / "torch", engines_dir / "m.pt", backend="torch")
    a = pq.read_table(tmp_path / "onnx" / "faces.parquet").column("score_fake").to_numpy()
    b = pq.read_table(tmp_path / "torch" / "faces.parquet").column("score_fake").to_numpy()
    assert len(a) == 110 and np.abs(a - b).max() < 1e-3
    assert_scores_spread(a)


def test_scores_equal_an_independent_computation(tmp_path):
    """score_fake = softmax(logits)[Fake] of the model on the face's crop, made here with PIL and
    torch alone; pred follows the threshold, a score equal to it counting as Fake. The bundled
    trained model: its scores spread over real and fake faces and are smooth in the pixels."""
    import json

    import torch

    from engines.checkpoint import load_checkpoint
    from scanner.run.job import DEFAULT_ENGINE
    from test_pipeline import reference_crop

    coco = json.loads((REALORFAKE / "Test-Dev_poly.json").read_text())
    by_label = {0: [], 1: []}
    for a in coco["annotations"]:
        by_label[a["category_id"]].append(a)
    anns = by_label[0][:6] + by_label[1][:6]
    ids = {a["image_id"] for a in anns}
    images = [{"id": i["id"], "file_name": str(REALORFAKE / i["file_name"])} for i in coco["images"] if i["id"] in ids]
    ann = write_coco(tmp_path / "twelve_poly.json", images, anns)
    quiet_run(tmp_path, tmp_path / "a", DEFAULT_ENGINE, ann, allow_outside=True, backend="torch")
    rows = pq.read_table(tmp_path / "a" / "faces.parquet").to_pylist()
    model, config, _ = load_checkpoint(DEFAULT_ENGINE)
    crops = np.stack([reference_crop(REALORFAKE / "Images" / "Test-Dev" / Path(r["file"]).name,
                                     (r["x"], r["y"], r["w"], r["h"]), config) for r in rows])
    x = (crops / 255.0 - np.array(config.mean)) / np.array(config.std)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).double().numpy()
    expected = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    got = np.array([r["score_fake"] for r in rows])
    assert len(rows) == 12
    assert_scores_spread(expected, floor=0.2)
    # DALI's and PIL's resampling differ by a grey level or two: the scores barely move
    assert np.abs(got - expected).max() < 0.02
    # the threshold's side: a face scored exactly at the threshold is Fake
    k = int(np.argsort(got)[len(got) // 2])
    quiet_run(tmp_path, tmp_path / "b", DEFAULT_ENGINE, ann, allow_outside=True, threshold=float(got[k]),
              backend="torch")
    preds = pq.read_table(tmp_path / "b" / "faces.parquet").column("pred").to_pylist()
    assert preds == [int(s >= np.float32(got[k])) for s in got] and preds[k] == 1 and 0 < sum(preds) < 12


def test_challenge_split_gets_a_metrics_row_per_corruption(engines_dir, tmp_path):
    quiet_run(REALORFAKE / "Images" / "Test-Challenge", tmp_path, engines_dir / "m.onnx")
    subsets = pq.read_table(tmp_path / "metrics.parquet").column("subset").to_pylist()
    assert subsets[0] == "all"
    assert set(subsets[1:]) == {"gaussian_noise", "gaussian_blur", "jpeg_q20", "low_contrast", "downscale_x4"}


def test_batching_does_not_change_scores(engines_dir, tmp_path):
    quiet_run(MULTIFACE / "Images", tmp_path / "a", engines_dir / "m.onnx", batch_size=64)
    quiet_run(MULTIFACE / "Images", tmp_path / "b", engines_dir / "m.onnx", batch_size=4)  # group.jpg split 4+2
    a = pq.read_table(tmp_path / "a" / "faces.parquet")
    b = pq.read_table(tmp_path / "b" / "faces.parquet")
    assert a.num_rows == b.num_rows == 7
    assert a.column("face_id").to_pylist() == b.column("face_id").to_pylist()
    assert_scores_spread(a.column("score_fake").to_numpy())
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
    # the corrupt neighbour did not change the scores: the good faces score as when scanned alone
    clean = [{"id": i + 1, "file_name": n} for i, n in enumerate(["good.jpg", "gray.jpg", "cmyk.jpg"])]
    alone = quiet_run(data, tmp_path / "alone", engines_dir / "m.onnx", batch_size=64, annotations=write_coco(
        data / "clean_poly.json", clean, [{"id": i + 1, "image_id": i + 1, "bbox": [20, 20, 100, 100],
                                           "category_id": 0} for i in range(3)]))
    alone_scores = pq.read_table(alone.faces_path).column("score_fake").to_pylist()
    assert_scores_spread(alone_scores, floor=0.005)
    got = [rows[1]["score_fake"], rows[7]["score_fake"], rows[8]["score_fake"]]
    np.testing.assert_allclose(got, alone_scores, atol=1e-5)
    assert rows[11]["score_fake"] == pytest.approx(rows[1]["score_fake"], abs=1e-6)


def test_cli_run_writes_results_and_bad_input_is_one_line(engines_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(MULTIFACE / "Images"), "--engine", str(engines_dir / "m.onnx"),
                               "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "scanned 7 faces in 2 images" in res.output
    assert pq.read_table(tmp_path / "o" / "faces.parquet").num_rows == 7
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


def test_a_cpu_run_with_an_onnx_engine_starts_without_torch(engines_dir, tmp_path):
    """torch takes seconds to import and a CPU scan with an exported engine needs none of it: a
    nightly job of many small runs pays that every time. The default --device auto finds no CUDA
    driver on this machine without asking torch."""
    import subprocess
    import sys

    from scanner.run.job import cuda_driver_present

    if cuda_driver_present():
        pytest.skip("a CUDA driver is present: --device auto asks torch, as it should")
    for p in sorted((REALORFAKE / "Images" / "Val").glob("*.jpg"))[:2]:
        shutil.copy(p, tmp_path / p.name)
    script = ("import sys\nfrom scanner.cli import main\n"
              f"main(['run', {str(tmp_path)!r}, '--engine', {str(engines_dir / 'm.onnx')!r}, '--detector', 'none',"
              f" '--out', {str(tmp_path / 'out')!r}, '--quiet', '--no-report'], standalone_mode=False)\n"
              "print('torch imported:', 'torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "torch imported: False" in res.stdout
    assert pq.read_table(tmp_path / "out" / "faces.parquet").column("status").to_pylist() == ["ok", "ok"]


def test_the_default_run_with_a_warm_cache_imports_neither_torch_nor_scikit_learn(tmp_path):
    """The default (bundled .pt) run: the first builds and caches its engine (torch needed);
    later runs read only the checkpoint's header (engines.checkpoint.read_header) and compute
    their metrics in NumPy: ~4 s less per run, of a ~10-s 480-face run."""
    import subprocess
    import sys

    from scanner.run.job import cuda_driver_present

    if cuda_driver_present():
        pytest.skip("a CUDA driver is present: --device auto asks torch, as it should")
    script = ("import sys\nfrom scanner.cli import main\n"
              f"main(['run', {str(REALORFAKE / 'Images' / 'Val')!r}, '--cache-dir', {str(tmp_path / 'cache')!r},"
              f" '--out', {str(tmp_path / 'out')!r}, '--overwrite', '--quiet', '--no-report'], standalone_mode=False)\n"
              "print('imported:', sorted(m for m in ('torch', 'sklearn') if m in sys.modules))\n")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parent.parent, timeout=600) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr[-2000:]
    assert "imported: ['torch']" in runs[0].stdout  # the first run exports the checkpoint
    assert "imported: []" in runs[1].stdout
    metrics = pq.read_table(tmp_path / "out" / "metrics.parquet").to_pylist()[0]
    assert metrics["n"] == 80 and metrics["roc_auc"] > 0.9
