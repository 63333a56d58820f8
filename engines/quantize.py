"""INT8 for CPU engines: static QDQ quantisation of a dfscan ONNX export, and its accuracy gate.

``quantize_onnx`` runs ONNX Runtime's ``quantize_static`` in QDQ format with per-channel int8
weights and uint8 activations, calibrated on the caller's batches. QDQ keeps the graph a plain
ONNX graph with QuantizeLinear/DequantizeLinear pairs, so the same file runs INT8 kernels in
ONNX Runtime and in OpenVINO (which turns the pairs into FakeQuantize); measured on this
project's 2-core EPYC, MobileNetV2 224: ORT 649 faces/s INT8 vs 290 fp32, OpenVINO 881 vs 510.

``accuracy_gate`` decides whether an INT8 engine may replace its fp32 engine: ROC-AUC of both on
labelled validation batches, and the score drift |Δ P(fake)| on a second set of batches.
The data comes in as plain iterators, so ``engines`` never needs the scanner's pipeline.
"""
from __future__ import annotations

import itertools
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from engines.errors import DfscanError
from engines.files import write_atomic

PRECISION_KEY = "dfscan_precision"  # ONNX metadata: "int8" on quantised exports
MAX_AUC_DROP = 0.005
# The AUC of a few dozen validation faces cannot resolve a 0.005 drop: the bundled model's INT8
# lost 0.0012 Val AUC (80 faces) yet moved Val scores by p95 |Δ| 0.16, and later lost 0.014 AUC
# on Test-Dev (measured once, after the gate was set). Scores moved that far flip verdicts near
# the threshold, so the gate also bounds the drift, measured on the validation faces.
MAX_SCORE_DRIFT_P95 = 0.05


# Faces ONNX Runtime calibrates on at once, as pixels: its calibration session (the model with a
# ReduceMin and a ReduceMax on every activation) peaks with the batch it runs. 480 Train faces at
# 224 px in batches of 64 peaked at 7.6 GB resident, in batches of 16 at 2.1 GB; minmax ranges do
# not depend on how the faces are cut into batches.
CALIB_PIXELS = 16 * 224 * 224


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over an iterator of (N, 3, H, W) arrays, each
    cut into pieces of at most ``CALIB_PIXELS`` input pixels."""

    def __init__(self, batches, input_name, chw, limit):
        self._it = iter(batches if limit is None else itertools.islice(batches, limit))
        self._input, self._chw = input_name, chw
        self._step = max(1, CALIB_PIXELS // (chw[1] * chw[2]))
        self._pieces: list[np.ndarray] = []
        self.used = 0  # batches read from ``batches``

    def get_next(self):
        while not self._pieces:  # (an empty batch has no piece: the next one is read)
            batch = next(self._it, None)
            if batch is None:
                return None
            batch = np.ascontiguousarray(batch, dtype=np.float32)
            if batch.ndim != 4 or tuple(batch.shape[1:]) != self._chw:
                raise DfscanError(f"calibration batches must be (N, {', '.join(map(str, self._chw))}) "
                                  f"float32 arrays, got {batch.shape}")
            self.used += 1
            self._pieces = [batch[i:i + self._step] for i in range(0, len(batch), self._step)][::-1]
        return {self._input: self._pieces.pop()}


def quantize_onnx(onnx_path, out, calib_batches: Iterable, *, max_batches: int | None = None,
                  method: str = "minmax", reduce_range: bool = True) -> Path:
    """Write a QDQ INT8 copy of the dfscan ONNX file ``onnx_path`` to ``out``; returns ``out``.

    ``calib_batches`` yields float32 (N, 3, H, W) arrays preprocessed exactly like scan inputs
    (a few hundred faces are plenty); ``max_batches`` caps how many are read. ``method`` is
    ONNX Runtime's calibration: 'minmax' (fast) or 'entropy' / 'percentile' (slower, can clip
    outliers better). ``reduce_range`` quantises weights to 7 bits: CPUs without AVX512-VNNI/AVX-VNNI
    multiply uint8×int8 with VPMADDUBSW, whose int16 sums saturate with full 8-bit weights. On
    this project's AVX2 EPYC it decided the gate (default MobileNetV2 at 112 px, 128 calibration
    faces: Val AUC drop 0.026 → 0.000 in ONNX Runtime, 0.024 → 0.002 in OpenVINO); it costs
    one bit of weight resolution elsewhere, and keeps one INT8 file valid on every CPU.
    The dfscan config is copied into the output's metadata, with
    ``dfscan_precision = int8``.
    Raises DfscanError for a file without dfscan metadata, badly shaped or no calibration data.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from engines.backends.onnx_backend import CONFIG_KEY, read_onnx_config

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise DfscanError(f"unknown calibration method {method!r}; choose one of: {', '.join(methods)}")
    onnx_path, out = Path(onnx_path), Path(out)
    config = read_onnx_config(onnx_path)
    reader = _Reader(calib_batches, "input", (3, *config.input_size), max_batches)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dfscan-q-", dir=out.parent) as tmp:
        # Shape inference and graph fusions first, as ONNX Runtime recommends: quantising after
        # Conv+BN folding keeps one scale per fused kernel instead of one per op.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        staged = Path(tmp) / "int8.onnx"
        try:
            quantize_static(str(prepared), str(staged), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=methods[method],
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        except DfscanError:
            raise
        except Exception as exc:
            if reader.used == 0:
                raise DfscanError(f"{out}: INT8 needs calibration images, and none came; "
                                  f"pass --calib-data with a few hundred faces") from None
            raise DfscanError(f"{onnx_path}: ONNX Runtime could not quantise it "
                              f"({str(exc).strip().splitlines()[0][:200]})") from None
        if reader.used == 0:
            raise DfscanError(f"{out}: INT8 needs calibration images, and none came; "
                              f"pass --calib-data with a few hundred faces")
        proto = onnx.load(str(staged))
        del proto.metadata_props[:]
        for key, value in ((CONFIG_KEY, json.dumps(config.to_dict())), (PRECISION_KEY, "int8"),
                           ("dfscan_calibration_batches", str(reader.used))):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        write_atomic(out, proto.SerializeToString())
    return out


@dataclass(frozen=True)
class GateResult:
    """The INT8 accuracy gate's figures; ``passed`` means ``auc_drop <= max_auc_drop`` and
    ``delta_p95 <= max_drift_p95``."""

    auc_fp32: float
    auc_int8: float
    auc_drop: float
    delta_p50: float
    delta_p95: float
    delta_p99: float
    delta_max: float
    faces_validation: int
    faces_drift: int
    max_auc_drop: float
    passed: bool
    max_drift_p95: float = MAX_SCORE_DRIFT_P95

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self, precision: str = "INT8") -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"{precision} gate {verdict}: AUC {self.auc_int8:.4f} vs fp32 {self.auc_fp32:.4f} "
                f"(drop {self.auc_drop:+.4f}, limit {self.max_auc_drop}); |Δscore| p50 "
                f"{self.delta_p50:.4f} p95 {self.delta_p95:.4f} (limit {self.max_drift_p95}) "
                f"p99 {self.delta_p99:.4f} max {self.delta_max:.4f}")


def fake_scores(logits: np.ndarray, class_names=("Real", "Fake")) -> np.ndarray:
    """P(fake) per row of (N, classes) logits: softmax, column 'Fake' (else the last)."""
    logits = np.asarray(logits, dtype=np.float64)
    column = list(class_names).index("Fake") if "Fake" in class_names else logits.shape[1] - 1
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (z[:, column] / z.sum(axis=1)).astype(np.float32)


def accuracy_gate(fp32_engine, int8_engine, validation: Iterable, drift: Iterable,
                  max_auc_drop: float = MAX_AUC_DROP, max_drift_p95: float = MAX_SCORE_DRIFT_P95) -> GateResult:
    """Compare an INT8 engine with its fp32 engine.

    ``validation`` yields ``(batch, labels)`` (labels 1 = fake): ROC-AUC of both engines and the
    drop ``auc_fp32 - auc_int8``. ``drift`` yields batches or ``(batch, labels)`` (e.g. Test-Dev):
    quantiles 50/95/99/max of |P_int8(fake) - P_fp32(fake)|. Passes when the drop is at most
    ``max_auc_drop`` (0.005 by default) and the p95 drift at most ``max_drift_p95`` (0.05; pass
    validation faces as ``drift`` when the verdict matters: it must not be tuned on a test set).
    Raises DfscanError when either iterator is empty or the validation labels hold a single
    class (AUC is undefined then).
    """
    from sklearn.metrics import roc_auc_score

    names = fp32_engine.config.class_names
    labels, s32, s8 = [], [], []
    for batch, y in validation:
        labels.append(np.asarray(y).reshape(-1))
        s32.append(fake_scores(fp32_engine.infer(batch), names))
        s8.append(fake_scores(int8_engine.infer(batch), names))
    if not labels:
        raise DfscanError("accuracy gate (INT8 or bf16): the validation data is empty; "
                          "give labelled faces (--gate-data)")
    labels = np.concatenate(labels)
    if len(np.unique(labels)) < 2:
        raise DfscanError("accuracy gate (INT8 or bf16): the validation faces are all one class; "
                          "AUC needs real and fake faces")
    auc32 = float(roc_auc_score(labels, np.concatenate(s32)))
    auc8 = float(roc_auc_score(labels, np.concatenate(s8)))
    deltas = []
    for item in drift:
        batch = item[0] if isinstance(item, (tuple, list)) else item
        deltas.append(np.abs(fake_scores(int8_engine.infer(batch), names)
                             - fake_scores(fp32_engine.infer(batch), names)))
    if not deltas:
        raise DfscanError("accuracy gate (INT8 or bf16): the drift data (second set, e.g. Test-Dev) is empty")
    deltas = np.concatenate(deltas).astype(np.float64)
    p50, p95, p99 = (float(v) for v in np.quantile(deltas, [0.5, 0.95, 0.99]))
    drop = auc32 - auc8
    return GateResult(auc_fp32=auc32, auc_int8=auc8, auc_drop=drop, delta_p50=p50, delta_p95=p95,
                      delta_p99=p99, delta_max=float(deltas.max()), faces_validation=len(labels),
                      faces_drift=len(deltas), max_auc_drop=max_auc_drop, max_drift_p95=max_drift_p95,
                      passed=bool(drop <= max_auc_drop and p95 <= max_drift_p95))


INT8_RECORD_FORMAT = "dfscan-int8/1"


def shipped_int8_paths(checkpoint) -> tuple[Path, Path]:
    """Where an INT8 file ships beside ``checkpoint``: ``<stem>.int8.onnx`` and its record."""
    qdq = Path(checkpoint).with_suffix(".int8.onnx")
    return qdq, _record_path(qdq)


def _record_path(qdq_path) -> Path:
    return Path(qdq_path).with_suffix(".json")  # mobilenetv2.int8.onnx → mobilenetv2.int8.json


def write_int8_record(qdq_path, checkpoint, gate: GateResult, **provenance) -> Path:
    """Record, beside a QDQ file made from ``checkpoint``, the checkpoint's and the file's sha256
    and the gate figures measured when it was made; ``provenance`` (calibration and validation
    data, command) is kept as given. With it the QDQ file can ship next to the checkpoint: users
    without calibration data then get the gated INT8 engine (``shipped_int8``)."""
    return _write_record(_record_path(qdq_path), INT8_RECORD_FORMAT, checkpoint, gate,
                         {"qdq_sha256": qdq_path}, provenance)


def shipped_int8(checkpoint) -> tuple[Path, dict] | None:
    """``(QDQ file, record)`` shipped beside ``checkpoint`` for exactly this checkpoint, or None.

    A record whose hashes do not match (the checkpoint was retrained, the file replaced) is
    ignored: its gate figures describe another model."""
    qdq, record_path = shipped_int8_paths(checkpoint)
    if not qdq.is_file():
        return None
    record = _read_record(record_path, INT8_RECORD_FORMAT, checkpoint, {"qdq_sha256": qdq})
    return (qdq, record) if record is not None else None


def _write_record(record_path, fmt: str, checkpoint, gate: GateResult, files: dict, provenance: dict) -> Path:
    """A gate record: its format, the sha256 of ``checkpoint`` and of each of ``files`` ({key:
    path}), the gate's figures and the provenance as given; written atomically."""
    from engines.cache import file_sha256

    record = {"format": fmt, "checkpoint_sha256": file_sha256(checkpoint),
              **{key: file_sha256(path) for key, path in files.items()}, "gate": gate.to_dict(), **provenance}
    return write_atomic(Path(record_path), json.dumps(record, indent=2, default=str))


def _read_record(record_path, fmt: str, checkpoint, files: dict) -> dict | None:
    """The gate record at ``record_path`` if it is a ``fmt`` record whose hashes match
    ``checkpoint`` and each of ``files`` ({key: path}) now, else None (missing, unreadable, or made
    for another model: its figures describe that one)."""
    from engines.cache import file_sha256

    try:
        record = json.loads(Path(record_path).read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(record, dict) or record.get("format") != fmt or not isinstance(record.get("gate"), dict)
            or record.get("checkpoint_sha256") != file_sha256(checkpoint)
            or any(record.get(key) != file_sha256(path) for key, path in files.items())):
        return None
    return record


BF16_RECORD_FORMAT = "dfscan-bf16/1"


def shipped_bf16_record_path(checkpoint) -> Path:
    """Where a bf16 gate record ships beside ``checkpoint``: ``<stem>.bf16.json``."""
    return Path(checkpoint).with_suffix(".bf16.json")


def write_bf16_record(record_path, checkpoint, gate: GateResult, **provenance) -> Path:
    """Record the bf16 accuracy gate measured for ``checkpoint`` (OpenVINO bf16 against fp32 on
    labelled faces). bf16 needs no file of its own (OpenVINO runs the fp32 IR in bf16), so the
    record alone ships beside the checkpoint as ``<stem>.bf16.json`` (``shipped_bf16``)."""
    return _write_record(record_path, BF16_RECORD_FORMAT, checkpoint, gate, {}, provenance)


def shipped_bf16(checkpoint) -> dict | None:
    """The bf16 gate record shipped beside ``checkpoint`` for exactly this checkpoint, or None
    (missing, unreadable, or made for another checkpoint: its figures describe another model)."""
    return _read_record(shipped_bf16_record_path(checkpoint), BF16_RECORD_FORMAT, checkpoint, {})
