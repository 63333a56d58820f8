"""The compiled-engine cache: reuse, rebuild of corrupt entries, unwritable folders, and two
processes building the same key at once."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engines.cache import RECORD, cache_key, default_cache_dir, get_or_build, key_fields, lookup

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "engines" / "default" / "mobilenetv2.pt"  # a real checkpoint: its bytes are the key
SIZE = (64, 64)


class Builds:
    """A build_fn that writes a small two-file engine and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, target: Path):
        self.calls += 1
        target.write_bytes(b"engine " * 1000)
        target.with_suffix(".bin").write_bytes(b"weights " * 1000)  # a companion, like an IR's
        return {"gate": {"auc_drop": 0.001, "passed": True}}


def _entries(root: Path):
    return sorted(p for p in root.iterdir() if p.is_dir())


def test_second_call_reuses_the_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "dfscan" / "engines"
    build, warnings = Builds(), []
    path, record = get_or_build(CHECKPOINT, "openvino", "int8", "cpu", build, input_size=SIZE,
                                warn=warnings.append)
    assert path.parent.parent == default_cache_dir() and path.suffix == ".xml"
    assert record["cache"] == "built" and build.calls == 1
    assert record["fields"]["checkpoint_sha256"] == key_fields(CHECKPOINT, "openvino", "int8", "cpu", SIZE)[
        "checkpoint_sha256"]
    assert record["fields"]["library"].startswith("openvino ")
    assert record["build"]["gate"]["passed"] is True and record["build_seconds"] >= 0
    assert set(record["files"]) == {"engine.xml", "engine.bin"}
    again, record2 = get_or_build(CHECKPOINT, "openvino", "int8", "cpu", build, input_size=SIZE,
                                  warn=warnings.append)
    assert (again, record2["cache"], build.calls) == (path, "hit", 1)
    assert lookup(CHECKPOINT, "openvino", "int8", "cpu", input_size=SIZE)[0] == path
    # Any field of the key gives another entry.
    for other in ({"precision": "fp32"}, {"device": "cuda:NVIDIA H200"}, {"input_size": (96, 96)},
                  {"backend": "onnx"}, {"settings": {"calibration_faces": 256}}):
        args = {"backend": "openvino", "precision": "int8", "device": "cpu", "input_size": SIZE, **other}
        p, r = get_or_build(CHECKPOINT, args.pop("backend"), args.pop("precision"), args.pop("device"),
                            build, warn=warnings.append, **args)
        assert r["cache"] == "built" and p != path
    assert build.calls == 6 and len(_entries(default_cache_dir())) == 6 and warnings == []


def test_real_engine_through_the_cache(tmp_path):
    from engines.backends import load_engine
    from engines.checkpoint import load_checkpoint
    from engines.export import export_onnx

    def build(target):
        model, config, _ = load_checkpoint(CHECKPOINT, input_size=SIZE)
        export_onnx(model, config, target)
        return {"opset": 17}

    path, record = get_or_build(CHECKPOINT, "onnx", "fp32", "cpu", build, input_size=SIZE, cache_dir=tmp_path)
    engine = load_engine(path)
    assert engine.config.input_size == SIZE
    assert engine.infer(np.zeros((2, 3, *SIZE), np.float32)).shape == (2, 2)
    assert json.loads((path.parent / RECORD).read_text())["build"] == {"opset": 17}


@pytest.mark.parametrize("damage", ["engine bytes", "companion deleted", "foreign record", "extra file"])
def test_corrupt_entry_is_rebuilt_with_a_warning(tmp_path, damage):
    build, warnings = Builds(), []
    path, _ = get_or_build(CHECKPOINT, "openvino", "fp32", "cpu", build, input_size=SIZE, cache_dir=tmp_path)
    if damage == "engine bytes":
        with open(path, "r+b") as f:
            f.seek(100)
            f.write(b"XXXX")
    elif damage == "companion deleted":
        path.with_suffix(".bin").unlink()
    elif damage == "foreign record":
        record = json.loads((path.parent / RECORD).read_text())
        record["key"] = "0" * 32
        (path.parent / RECORD).write_text(json.dumps(record))
    else:
        (path.parent / "stray.bin").write_bytes(b"?")
    assert lookup(CHECKPOINT, "openvino", "fp32", "cpu", input_size=SIZE, cache_dir=tmp_path,
                  warn=warnings.append) is None
    again, record = get_or_build(CHECKPOINT, "openvino", "fp32", "cpu", build, input_size=SIZE,
                                 cache_dir=tmp_path, warn=warnings.append)
    assert build.calls == 2 and record["cache"] == "built" and again == path
    assert len(warnings) == 2 and all(str(path.parent) in w for w in warnings)
    assert "rebuilding" in warnings[1]
    assert lookup(CHECKPOINT, "openvino", "fp32", "cpu", input_size=SIZE, cache_dir=tmp_path)[0] == path
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".tmp", ".trash"))] == []


def test_unwritable_cache_dir_builds_into_a_temporary_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    build, warnings = Builds(), []
    path, record = get_or_build(CHECKPOINT, "onnx", "int8", "cpu", build, input_size=SIZE,
                                cache_dir=blocker / "sub", warn=warnings.append)
    assert path.is_file() and record["cache"] == "temporary" and build.calls == 1
    assert len(warnings) == 1 and "\n" not in warnings[0] and "not writable" in warnings[0]
    assert str(blocker / "sub") in warnings[0]


_CHILD = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from engines.cache import get_or_build
    root, cache, lock = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "lock"
    (root / f"ready-{os.getpid()}").touch()

    def build(target):
        with open(root / "builds.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        # Without the lock both processes are inside build() together: wait for the other one,
        # so the two really race to publish. With it, wait until the other one is running, then
        # give it time to reach the lock (it only matters that it gets there before we publish
        # if the lock were missing: then it would build too, and the test would catch that).
        deadline = time.time() + 60
        while time.time() < deadline:
            if (lock and len(list(root.glob("ready-*"))) == 2) or (
                    not lock and len((root / "builds.log").read_text().split()) == 2):
                break
            time.sleep(0.05)
        if lock:
            time.sleep(2)
        target.write_bytes(f"engine built by {os.getpid()} ".encode() * 5000)
        return {"pid": os.getpid()}

    path, record = get_or_build(sys.argv[4], "onnx", "int8", "cpu", build, input_size=(64, 64),
                                cache_dir=cache, lock=lock, warn=lambda m: print("WARN", m, file=sys.stderr))
    print(json.dumps({"path": str(path), "cache": record["cache"]}))
""")


@pytest.mark.parametrize("lock", ["lock", "nolock"])
def test_two_processes_building_together_leave_one_sound_entry(tmp_path, lock):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    cache = tmp_path / "cache"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    children = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(cache), lock, str(CHECKPOINT)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for _ in range(2)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert "WARN" not in err
        results.append(json.loads(out))
    builds = (tmp_path / "builds.log").read_text().split()
    assert len(builds) == (1 if lock == "lock" else 2)
    assert sorted(r["cache"] for r in results) == ["built", "hit"]
    assert results[0]["path"] == results[1]["path"]
    assert len(_entries(cache)) == 1 and not list(cache.glob(".tmp-*"))
    path, record = lookup(CHECKPOINT, "onnx", "int8", "cpu", input_size=SIZE, cache_dir=cache)
    assert str(path) == results[0]["path"]
    assert path.read_bytes() == f"engine built by {record['build']['pid']} ".encode() * 5000
    assert record["key"] == cache_key(key_fields(CHECKPOINT, "onnx", "int8", "cpu", SIZE))
