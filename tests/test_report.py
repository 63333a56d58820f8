"""dfscan report: summary.json and a self-contained report.html for real runs (bundled model,
real realorfake and multiface images, a hostile file name, a missing and a truncated file)."""
from __future__ import annotations

import base64
import collections
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from engines.errors import DfscanError
from scanner.run.job import run_job
from scanner.report.report import write_report
from scanner.cli import main
from scanner.settings import RunSettings

from _data import MULTIFACE, REALORFAKE, write_coco

HOSTILE = "evil<script>alert(1)<script>.jpg"  # '/' cannot be in a file name; '<' can
MISSING = "gone<b>bold<b>.jpg"
N_CHALLENGE = 18


def _scan(images, out, annotations=None, threshold=0.5):
    settings = RunSettings(batch_size=16, device="cpu", threshold=threshold)
    return run_job(images, out, None, annotations, settings, progress=False, log=lambda m: None)


def _labelled_set(root):
    """18 Test-Challenge images (one renamed to HOSTILE), multiface's 6-face group photo, a
    truncated JPEG and an annotated file that is not there: 27 faces, 24 of them scannable."""
    challenge = json.loads((REALORFAKE / "Test-Challenge_poly.json").read_text())
    (root / "Images").mkdir()
    images, anns = [], []
    for record in challenge["images"][:N_CHALLENGE]:
        name = HOSTILE if record["id"] == 3 else f"tc_{record['id']:03d}.jpg"
        shutil.copy(REALORFAKE / record["file_name"], root / "Images" / name)
        images.append({"id": record["id"], "file_name": f"Images/{name}", "corruption": record["corruption"]})
        anns += [a for a in challenge["annotations"] if a["image_id"] == record["id"]]
    multi = json.loads((MULTIFACE / "multiface_poly.json").read_text())
    shutil.copy(MULTIFACE / "Images" / "group.jpg", root / "Images" / "group.jpg")
    images.append({"id": 100, "file_name": "Images/group.jpg"})
    anns += [{**a, "image_id": 100} for a in multi["annotations"] if a["image_id"] == 1]
    data = (REALORFAKE / challenge["images"][0]["file_name"]).read_bytes()
    (root / "Images" / "cut.jpg").write_bytes(data[: len(data) // 2])
    for n, name in ((101, "cut.jpg"), (102, MISSING)):
        images.append({"id": n, "file_name": f"Images/{name}"})
        anns.append({"image_id": n, "bbox": [100, 100, 200, 200], "category_id": 1})
    return write_coco(root / "set_poly.json", images, [{**a, "id": n} for n, a in enumerate(anns, 1)])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished labelled run at threshold 0 (every scanned face flagged) with its report."""
    root = tmp_path_factory.mktemp("report")
    annotations = _labelled_set(root)
    _scan(root / "Images", root / "run", annotations, threshold=0.0)
    html_path, summary_path = write_report(root / "run", log=lambda m: None, progress=False)
    return {"dir": root / "run", "html": html_path, "page": html_path.read_text(encoding="utf-8"),
            "summary": json.loads(summary_path.read_text()), "root": root}


def test_summary_counts_equal_faces_parquet(run):
    faces = pq.read_table(run["dir"] / "faces.parquet").to_pylist()
    summary = run["summary"]
    assert summary["faces"] == len(faces) == N_CHALLENGE + 6 + 2
    assert summary["images"] == len({r["image_id"] for r in faces}) == N_CHALLENGE + 3
    assert summary["flagged"] == sum(r["pred"] == 1 for r in faces) == N_CHALLENGE + 6
    assert summary["by_status"] == dict(collections.Counter(r["status"] for r in faces))
    assert summary["by_status"] == {"ok": 24, "truncated_file": 1, "missing_file": 1}
    metrics = pq.read_table(run["dir"] / "metrics.parquet").to_pylist()
    assert summary["metrics"]["all"] == metrics[0] and metrics[0]["subset"] == "all"
    assert [r["subset"] for r in summary["metrics"]["subsets"]] == [r["subset"] for r in metrics[1:]]
    assert summary["threshold"] == 0.0 and summary["engine"].endswith("mobilenetv2.pt")
    assert summary["report"] == str(run["html"].resolve()) and summary["duration_s"] > 0  # the manifest's wall time
    assert summary["versions"]["dfscan"]
    assert not [p.name for p in run["dir"].iterdir() if p.name.endswith(".tmp")]  # renamed into place


REMOTE_ATTR = re.compile(r"""\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.I)
CSS_URL = re.compile(r"""url\(\s*["']?\s*(?!data:)""", re.I)


def test_page_references_nothing_remote(run):
    page = run["page"]
    assert not REMOTE_ATTR.findall(page)
    assert not CSS_URL.findall(page)
    assert not re.search(r"<(?:script|link|iframe|object|embed)\b", page, re.I)
    srcs = re.findall(r"""\bsrc\s*=\s*["']([^"']*)""", page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)


def _jpeg_sizes(page: str) -> list[tuple[int, int]]:
    sizes = []
    for b64 in re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page):
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            im.load()
            sizes.append(im.size)
    return sizes


def test_top_flagged_faces_are_thumbnails(run):
    sizes = _jpeg_sizes(run["page"])
    assert run["page"].count("data:image/jpeg") == len(sizes) == 24  # every flagged face, < top=32
    assert all(s == (128, 128) for s in sizes)  # 224-px crops, shrunk
    scores = [float(s) for s in re.findall(r"score_fake <b>([0-9.]+)</b>", run["page"])]
    assert scores == sorted(scores, reverse=True)



def test_cli_top(run, tmp_path):
    copy = shutil.copytree(run["dir"], tmp_path / "run")
    result = CliRunner().invoke(main, ["report", str(copy), "--top", "16", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(_jpeg_sizes((copy / "report.html").read_text(encoding="utf-8"))) == 16
    assert f"wrote {copy / 'report.html'} and {copy / 'summary.json'}" in result.output


def test_file_names_are_escaped(run):
    page = run["page"]
    assert "<script>" not in page and "<b>bold" not in page
    assert page.count("evil&lt;script&gt;alert(1)&lt;script&gt;.jpg") == 1  # its thumbnail
    assert "gone&lt;b&gt;bold&lt;b&gt;.jpg" in page  # the error list
    assert "missing_file" in page and "truncated_file" in page


def test_unlabelled_run_and_images_moved(tmp_path):
    (tmp_path / "imgs").mkdir()
    for n in range(3):
        shutil.copy(REALORFAKE / "Images" / "Test-Dev" / f"{n + 1:05d}.jpg", tmp_path / "imgs" / f"{n}.jpg")
    _scan(tmp_path / "imgs", tmp_path / "run")
    _, summary_path = write_report(tmp_path / "run", top=2, log=lambda m: None, progress=False)
    summary = json.loads(summary_path.read_text())
    assert summary["metrics"] is None and summary["labelled"] is False and summary["faces"] == 3
    preds = pq.read_table(tmp_path / "run" / "faces.parquet").column("pred").to_pylist()
    assert summary["flagged"] == preds.count(1) == 1  # at threshold 0.5 only 00003 (a fake) is flagged
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png") == 1  # the histogram; no ROC / PR without labels
    assert page.count("data:image/jpeg") == 1  # the one flagged face (top=2)

    (tmp_path / "imgs").rename(tmp_path / "moved")  # the scanned folder moves away
    write_report(tmp_path / "run", log=lambda m: None, progress=False)
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "data:image/jpeg" not in page and "is not here; pass --images" in page
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--images", str(tmp_path / "moved"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "report.html").read_text(encoding="utf-8").count("data:image/jpeg") == 1


def _not_finished(path, run):
    """As a killed run leaves it: parts/ and a manifest that is not complete, no faces.parquet."""
    (path / "parts").mkdir(parents=True)
    shutil.copy(run["dir"] / "faces.parquet", path / "parts" / "part-00000.parquet")
    manifest = json.loads((run["dir"] / "manifest.json").read_text())
    manifest.update(complete=False, parts=[{"file": "parts/part-00000.parquet", "rows": 26}])
    (path / "manifest.json").write_text(json.dumps(manifest))


def _foreign_parquet(path, run):
    shutil.copytree(run["dir"], path, ignore=shutil.ignore_patterns("report.html", "summary.json"))
    table = pq.read_table(path / "faces.parquet")
    pq.write_table(table.replace_schema_metadata(None), path / "faces.parquet")


def _killed_in_finish(path, run):
    """Killed after faces.parquet was renamed into place, before the manifest said complete."""
    shutil.copytree(run["dir"], path, ignore=shutil.ignore_patterns("report.html", "summary.json"))
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))


@pytest.mark.parametrize("make, words", [
    (lambda p, run: None, "no such folder"),
    (lambda p, run: p.mkdir(), "not a dfscan run folder"),
    (lambda p, run: (p.mkdir(), (p / "manifest.json").write_text("{oops")), "unreadable"),
    (_not_finished, "not finished"),
    (_killed_in_finish, "not finished"),
    (_foreign_parquet, "no dfscan run settings"),
])
def test_not_a_finished_run_is_one_line(tmp_path, run, make, words):
    target = tmp_path / "out"
    make(target, run)
    with pytest.raises(DfscanError) as info:
        write_report(target, log=lambda m: None, progress=False)
    assert words in str(info.value) and "\n" not in str(info.value) and str(target) in str(info.value)
    assert not (target / "report.html").exists()
    result = CliRunner().invoke(main, ["report", str(target)])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0, result.output
    assert result.output.startswith("Error: ")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install -y chromium)")
def test_real_browser_renders_plots_and_faces(run, tmp_path):
    png = tmp_path / "page.png"
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png}", "--window-size=1280,4000", run["html"].resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(png) as im:
        assert im.size == (1280, 4000)
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    assert rgb.std() > 10  # not a blank page
    # colour comes from the pictures (plots, faces): text and tables are grey but for the
    # Real/Fake labels. This page has ~5% colourful pixels; with its images broken, 0.1%.
    colourful = ((rgb.max(axis=2) - rgb.min(axis=2)) > 40).mean()
    assert colourful > 0.01, colourful
