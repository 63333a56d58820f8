"""The GPU path: the same DALI graph with the 'mixed' decoder, CUDA engines, no host round trip.

Marked ``gpu``: skipped where CUDA is absent (CI, our CPU machines). They run on a lent GPU
machine through benchmarks/gpu/ (see its README).
"""
import numpy as np
import pyarrow.parquet as pq
import pytest

from scanner.catalog import load_catalog
from scanner.run.job import run_job
from scanner.pipeline.cropper import Cropper
from scanner.settings import RunSettings

from _data import MULTIFACE, REALORFAKE, assert_scores_spread
from test_pipeline import RAW

pytestmark = pytest.mark.gpu


def crops_on(device, catalog, config, batch_size=16):
    from scanner.pipeline.batching import plan_batches

    cropper = Cropper(config, RunSettings(batch_size=batch_size, device=device))
    out = {}
    for planned in plan_batches(catalog, batch_size, config.crop_margin):
        pieces, failed = cropper.crop(planned.jobs)
        assert not failed
        for face_ids, crops in pieces:
            if device == "gpu":
                assert crops.is_cuda  # handed over on the device, no host copy
                crops = crops.cpu().numpy()
            out.update(zip(face_ids, crops))
    return out


@pytest.mark.parametrize("images", [REALORFAKE / "Images" / "Val", MULTIFACE / "Images"])
def test_mixed_decoder_crops_equal_cpu_crops(images):
    catalog = load_catalog(images)
    catalog = catalog.subset(list(catalog.images)[:16])
    cpu, gpu = crops_on("cpu", catalog, RAW), crops_on("gpu", catalog, RAW)
    assert cpu.keys() == gpu.keys()
    for f in cpu:
        assert np.percentile(np.abs(cpu[f] - gpu[f]), 99.5) <= 2.0


def test_cuda_fp16_torch_engine_matches_cpu_fp32(tmp_path):
    """The bundled trained model: its scores spread over real and fake faces, and half precision
    moves a trained model's scores little (a random one's can swing on rounding alone)."""
    from scanner.run.job import DEFAULT_ENGINE

    quiet = dict(progress=False, log=lambda m: None)
    run_job(REALORFAKE / "Images" / "Test-Dev", tmp_path / "cpu", DEFAULT_ENGINE, settings=RunSettings(device="cpu"), **quiet)
    run_job(REALORFAKE / "Images" / "Test-Dev", tmp_path / "gpu", DEFAULT_ENGINE, settings=RunSettings(device="gpu"), **quiet)
    a = pq.read_table(tmp_path / "cpu" / "faces.parquet").column("score_fake").to_numpy()
    b = pq.read_table(tmp_path / "gpu" / "faces.parquet").column("score_fake").to_numpy()
    assert_scores_spread(a, floor=0.2)
    assert len(a) == len(b) == 110 and np.abs(a - b).max() < 1e-2


def test_gpu_run_survives_bad_inputs(engines_dir, tmp_path):
    from test_run import write_bad_corpus

    data = tmp_path / "data"
    data.mkdir()
    ann = write_bad_corpus(data)
    summary = run_job(data, tmp_path / "out", engines_dir / "m.onnx", ann, RunSettings(device="gpu"),
                      progress=False, log=lambda m: None)
    assert summary.faces == 14
    statuses = pq.read_table(summary.faces_path).column("status").to_pylist()
    assert statuses.count("decode_error") == 1
