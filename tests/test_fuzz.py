"""Fuzz: hundreds of random mutations of real JPEGs; the run completes and loses nothing."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from engines.export import export_onnx, model_from_source
from scanner.job import run_job
from scanner.runner import RunSettings

from _data import REALORFAKE, write_coco

N_MUTANTS = 300


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(0, 6)
    if kind == 0:  # flip bits anywhere
        for pos in rng.integers(0, len(b), rng.integers(1, 20)):
            b[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # overwrite a run of bytes in the headers
        pos = int(rng.integers(2, min(len(b) - 16, 700)))
        b[pos:pos + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
    elif kind == 2:  # truncate, sometimes keeping the end marker
        cut = int(rng.integers(2, len(b)))
        b = b[:cut] + (b"\xff\xd9" if rng.random() < 0.5 else b"")
    elif kind == 3:  # delete a chunk from the middle
        pos = int(rng.integers(2, len(b) - 200))
        del b[pos:pos + int(rng.integers(1, 200))]
    elif kind == 4:  # insert garbage
        pos = int(rng.integers(2, len(b)))
        b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
    else:  # corrupt the entropy-coded data in bulk
        start = len(b) // 3
        for pos in rng.integers(start, len(b) - 2, 200):
            b[pos] = int(rng.integers(0, 256))
    return bytes(b)


@pytest.fixture(scope="module")
def engine64(tmp_path_factory):
    model, config = model_from_source(arch="mobilenetv2", seed=5, input_size=(64, 64))
    return export_onnx(model, config, tmp_path_factory.mktemp("fz") / "m64.onnx")


def test_mutated_jpegs_never_lose_a_face(engine64, tmp_path):
    source = json.loads((REALORFAKE / "Val_poly.json").read_text())
    originals = source["images"][:12]
    boxes = {a["image_id"]: a["bbox"] for a in source["annotations"]}
    rng = np.random.default_rng(2026)
    images, anns, good_ids = [], [], []
    for n in range(N_MUTANTS + len(originals)):
        orig = originals[n % len(originals)]
        data = (REALORFAKE / orig["file_name"]).read_bytes()
        clean = n < len(originals) or n % 25 == 0
        name = f"{n:04d}.jpg"
        (tmp_path / name).write_bytes(data if clean else mutate(data, rng))
        images.append({"id": n + 1, "file_name": name})
        anns.append({"id": n + 1, "image_id": n + 1, "bbox": boxes[orig["id"]], "category_id": 0})
        if clean:
            good_ids.append(n + 1)
    ann = write_coco(tmp_path / "fuzz_poly.json", images, anns)
    summary = run_job(tmp_path, tmp_path / "out", engine64, ann, RunSettings(batch_size=32),
                      progress=False, log=lambda m: None)
    rows = pq.read_table(summary.faces_path).to_pylist()
    assert [r["face_id"] for r in rows] == list(range(1, len(images) + 1))  # each face exactly once
    by_id = {r["face_id"]: r for r in rows}
    for r in rows:
        assert (r["status"] == "ok") == (r["score_fake"] is not None) == (r["error"] is None)
    # clean copies score exactly as the originals do, whatever their batch neighbours were
    for i in good_ids:
        twin = by_id[(i - 1) % len(originals) + 1]
        assert by_id[i]["status"] == "ok"
        assert by_id[i]["score_fake"] == pytest.approx(twin["score_fake"], abs=1e-5)
    statuses = {r["status"] for r in rows}
    assert "ok" in statuses and len(statuses) > 2  # the mutations did hit several failure kinds
