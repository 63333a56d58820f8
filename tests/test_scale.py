"""Memory independent of job size: the catalog as columns, COCO streamed, faces.parquet merged
from the parts row group by row group — same rows, same order, exactly once per face."""
import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engines.errors import DfscanError
from scanner.catalog import Catalog, catalog_from_coco, load_catalog
from scanner.output import parts as parts_module
from scanner.output.parts import RunOutput
from scanner.output.schema import FACES_SCHEMA
from scanner.pipeline import batching
from scanner.run.job import run_job
from scanner.settings import RunSettings

from _data import REALORFAKE, write_coco


def mixed_set(root):
    """Present, missing and refused files, faces of two images interleaved in the annotation
    list, sparse ids (a 10**12 one), bad boxes, a face on an unknown image, a detect status."""
    for k, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        shutil.copy(REALORFAKE / "Images" / "Val" / f"{k + 1:05d}.jpg", root / name)
    images = [{"id": 7, "file_name": "a.jpg"}, {"id": 10**12, "file_name": "b.jpg", "corruption": "jpeg_q20"},
              {"id": 3, "file_name": "gone.jpg"}, {"id": 4, "file_name": "/etc/passwd"},
              {"id": 5, "file_name": "c.jpg", "status": "no_face", "error": "no face found"}]
    box = [100, 100, 150, 150]
    anns = [{"id": 50, "image_id": 10**12, "bbox": box, "category_id": 1, "score": 0.9},
            {"id": 2, "image_id": 7, "bbox": box, "category_id": 0},
            {"id": 10**12 + 1, "image_id": 10**12, "bbox": [1, 1, 3], "category_id": 1},
            {"id": 4, "image_id": 7, "bbox": [math.nan, 1, 2, 3]},
            {"id": 9, "image_id": 3, "bbox": box, "category_id": 0},
            {"id": 6, "image_id": 99, "bbox": box, "category_id": 0},
            {"id": 1, "image_id": 4, "bbox": box, "category_id": 1},
            {"id": 8, "image_id": 7, "bbox": [-50, -50, 10, 10], "category_id": 1}]
    return write_coco(root / "mixed_poly.json", images, anns), anns


def test_mixed_catalog_rows_in_catalog_order_once_each(engines_dir, tmp_path):
    ann, anns = mixed_set(tmp_path)
    summary = run_job(tmp_path, tmp_path / "out", engines_dir / "m.onnx", ann, RunSettings(batch_size=2),
                      part_rows=2, progress=False, log=lambda m: None)
    rows = pq.read_table(summary.faces_path).to_pylist()
    # annotation order, then the row of the image detect found no face in (the next free id)
    assert [r["face_id"] for r in rows] == [a["id"] for a in anns] + [10**12 + 2]
    status = {r["face_id"]: r["status"] for r in rows}
    assert status == {50: "ok", 2: "ok", 10**12 + 1: "invalid_box", 4: "invalid_box", 9: "missing_file",
                      6: "unknown_image", 1: "path_refused", 8: "box_outside_image", 10**12 + 2: "no_face"}
    by_id = {r["face_id"]: r for r in rows}
    assert by_id[50]["image_id"] == 10**12 and by_id[50]["file"] == "b.jpg"
    assert by_id[50]["corruption"] == "jpeg_q20" and by_id[50]["label"] == 1
    assert by_id[50]["det_score"] == pytest.approx(0.9) and by_id[2]["det_score"] is None
    assert by_id[9]["label"] == 0 and by_id[4]["label"] is None and math.isnan(by_id[4]["x"])
    assert by_id[10**12 + 2]["x"] is None and by_id[2]["x"] == 100


def test_records_views_and_subset_agree_with_the_columns(tmp_path):
    ann, anns = mixed_set(tmp_path)
    cat = load_catalog(tmp_path, ann)
    assert list(cat.faces) == [a["id"] for a in anns] + [10**12 + 2]
    assert list(cat.images) == [7, 10**12, 3, 4, 5, 99]
    assert cat.images[7].face_ids == [2, 4, 8] and cat.images[10**12].face_ids == [50, 10**12 + 1]
    assert cat.images[3].path is None and cat.images[7].path == tmp_path / "a.jpg"
    assert cat.images[4].problem[0] == "path_refused" and cat.images[99].problem[0] == "unknown_image"
    assert cat.faces[50].bbox == (100.0, 100.0, 150.0, 150.0) and cat.faces[50].score == 0.9
    assert 10**12 in cat.images and 11 not in cat.images and "7" not in cat.images
    # the same dict in memory (dfscan run's detections) gives the same catalog
    same = catalog_from_coco(tmp_path, json.loads(ann.read_text()), ann)
    assert repr([cat.faces[f] for f in cat.faces]) == repr([same.faces[f] for f in same.faces])  # NaN boxes
    assert [cat.images[i] for i in cat.images] == [same.images[i] for i in same.images]
    sub = cat.subset([5, 10**12, 12345, 7])
    assert list(sub.images) == [5, 10**12, 7] and list(sub.faces) == [10**12 + 2, 50, 10**12 + 1, 2, 4, 8]
    assert [sub.images[i] for i in sub.images] == [cat.images[i] for i in (5, 10**12, 7)]
    # records given as mappings (explain's selection) build the same columns
    again = Catalog({i: cat.images[i] for i in cat.images}, {f: cat.faces[f] for f in cat.faces})
    assert [again.images[i] for i in again.images] == [cat.images[i] for i in cat.images]
    assert repr([again.faces[f] for f in again.faces]) == repr([cat.faces[f] for f in cat.faces])


def test_images_after_annotations_and_broken_json_streamed(tmp_path):
    body = {"annotations": [{"id": 2, "image_id": 1, "bbox": [1, 2, 3, 4]}], "images": [{"id": 1, "file_name": "x.jpg"}]}
    path = tmp_path / "late_poly.json"
    path.write_text(json.dumps(body))
    cat = load_catalog(tmp_path, path)
    assert list(cat.images) == [1] and cat.images[1].face_ids == [2] and cat.faces[2].bbox == (1.0, 2.0, 3.0, 4.0)
    # valid at its start, cut off in the annotations: named as not valid JSON, not a traceback
    text = json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": body["annotations"] * 3})
    path.write_text(text[:-30])
    with pytest.raises(DfscanError, match="not valid JSON"):
        load_catalog(tmp_path, path)


def test_failed_faces_stream_in_bounded_batches(tmp_path):
    n = 3 * batching.MAX_FAILED + 5
    write_coco(tmp_path / "gone_poly.json", [{"id": i, "file_name": f"gone/{i}.jpg"} for i in range(1, n + 1)],
               [{"id": i, "image_id": i, "bbox": [1, 1, 5, 5]} for i in range(1, n + 1)])
    cat = load_catalog(tmp_path, tmp_path / "gone_poly.json")
    batches = list(batching.plan_batches(cat, 64, 0.0))
    assert [len(b.failed) for b in batches] == [batching.MAX_FAILED] * 3 + [5]
    assert [r.face_id for b in batches for r in b.failed] == list(range(1, n + 1))


def in_memory_merge(parts, face_order, schema):
    """The assembly as it was before it streamed: every part in memory, first row per face, sorted."""
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    ids = table.column("face_id").to_pylist()
    first = {}
    for row, f in enumerate(ids):
        first.setdefault(f, row)
    # faces the catalog does not name (video faces) follow by id
    rows = sorted(first.values(), key=lambda r: (face_order.get(ids[r], len(face_order)), ids[r]))
    return table.take(pa.array(rows, type=pa.int64())).cast(schema)


def test_streamed_merge_equals_the_in_memory_one(tmp_path, monkeypatch):
    # tiny row groups and a two-part cache, so that the merge steps across parts, evicts and re-reads
    monkeypatch.setattr(parts_module, "GROUP_ROWS", 7)
    monkeypatch.setattr(parts_module, "CACHED_PARTS", 2)
    rng = np.random.default_rng(1)
    order = rng.permutation(np.arange(1, 120)).tolist()  # catalog order, not id order
    written = order[:50] + order[30:80] + order[90:] + [5000, 4000] + order[80:95]  # a resume re-scans some
    meta = {"engine": "e", "threshold": 0.5}
    out = RunOutput(tmp_path / "o", meta, part_rows=9)
    for start in range(0, len(written), 5):
        ids = written[start:start + 5]
        out.add(pa.table({"image_id": ids, "file": [f"{f}.jpg" for f in ids], "face_id": ids,
                          **{c: [float(f + k) for f in ids] for k, c in enumerate("xywh")},
                          "label": [f % 2 for f in ids], "score_fake": rng.random(len(ids)).tolist(),
                          "pred": [0] * len(ids), "status": ["ok"] * len(ids), "error": [None] * len(ids),
                          "corruption": [None] * len(ids), "det_score": [None] * len(ids),
                          "frame": [None] * len(ids), "time_s": [None] * len(ids), "track_id": [None] * len(ids)},
                         schema=FACES_SCHEMA))
    out.flush()
    parts = sorted((tmp_path / "o" / "parts").glob("part-*.parquet"))
    assert len(parts) > 4
    expected = in_memory_merge(parts, {f: n for n, f in enumerate(order)}, out.schema)
    path = out.finish(np.array(order))
    got = pq.read_table(path)
    assert got.equals(expected)  # same rows, same order, same schema and metadata
    assert got.schema.metadata == expected.schema.metadata and got.schema.metadata
    assert got.column("face_id").to_pylist() == order + [4000, 5000]
    assert pq.ParquetFile(path).metadata.num_row_groups == math.ceil(got.num_rows / 7)


@pytest.mark.parametrize("block, run", [(1, 1 << 18), (2, 1 << 18), (3, 90), (7, 1 << 18), (64, 300),
                                        (1 << 22, 1 << 18), (1 << 22, 90), (1 << 22, 300)])
def test_one_pass_reader_equals_json_load_at_any_block_size(tmp_path, monkeypatch, block, run):
    """Records cut anywhere by the reader's blocks (mid-number, mid-string, mid-escape, inside
    a multi-byte character, in whitespace), and runs of records parsed at once whose cut may
    fall inside a record (a '},' in a string or after a nested object), come out as the json
    module reads the whole file."""
    from scanner.catalog import stream

    monkeypatch.setattr(stream, "BLOCK", block)
    monkeypatch.setattr(stream, "RUN", run)
    images = [{"id": i, "file_name": f"d/é\"{i}\\x" + "long" * 50 * (i % 2) + ".jpg",
               "n": [1.5e-3, -0, 12345678901234567890]} for i in range(1, 8)]
    anns = [{"id": 100 + i, "image_id": i, "bbox": [i, 2.25, math.nan, 1e300], "segmentation": [[1, 2], [3, 4]],
             "category_id": i % 2, "score": True} for i in range(1, 8)]
    for a in anns[1::3]:
        a["attributes"] = {"note": "x}, {\"id\": 9}", "inner": {"k": 1}}
        a["tail"] = [{"a": 1}, {"b": 2}]
    text = ('\ufeff {"info" : {"a": [1, {"b": "]}"}]}, "count": 1234567890123, "annotations":\n[ ' + ", ".join(map(json.dumps, anns))
            + ' ] ,"images" :[' + ",\n         ".join(map(json.dumps, images)) + '], "categories": []}\n\n')
    path = tmp_path / "cut_poly.json"
    path.write_text(text, encoding="utf-8")
    got = {"images": [], "annotations": []}
    for key, recs in stream.CocoReader(path):
        got[key].extend(recs)
    assert json.dumps(got) == json.dumps({"images": images, "annotations": anns})  # NaN too
    for broken, why in ((text.rstrip() + ' x', "extra data"), (text[:-12], "not valid JSON"),
                        (text.replace('"images" :[', '"images" :[ 5 ', 1), "not valid JSON")):
        path.write_text(broken, encoding="utf-8")
        with pytest.raises(DfscanError, match=why):
            [r for _, recs in stream.CocoReader(path) for r in recs]
    spaced = '{"images": [' + ",        ".join(map(json.dumps, images[:3])) + "]}"  # blocks ending in whitespace
    path.write_text(spaced, encoding="utf-8")
    assert [r for _, recs in stream.CocoReader(path) for r in recs] == images[:3]
