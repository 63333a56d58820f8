"""Quantisation-aware fine-tuning of a MobileNetV2 dfscan checkpoint, so that its INT8 engine may
pass the accuracy gate (issue 14): the bundled model's post-training INT8 file moves Val scores by
p95 |Δ| 0.16 (the gate allows 0.05).

The model is torchvision's quantizable MobileNetV2 (same weights and names), fused, with fake
quantisation shaped like the QDQ file ``engines.quantize.quantize_onnx`` makes (per-channel
symmetric 7-bit weights, per-tensor asymmetric uint8 activations), fine-tuned on Train crops made
by the scan pipeline, clean and corrupted. Its float weights are then put back into the plain
model and saved as a dfscan checkpoint; the INT8 file is made from that checkpoint by the usual
``dfscan export --int8`` path, and judged by the usual gate on Val. Nothing here touches a test
split.

    PYTHONPATH=$PWD python benchmarks/training/qat.py --epochs 3 --out /tmp/qat/model.pt
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch

from engines.checkpoint import load_checkpoint, save_checkpoint
from engines.config import IMAGENET_MEAN, IMAGENET_STD
from engines.train.augment import corrupt
from scanner.run.training import face_batches

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "realorfake" / "Images"


def crops(split, config):
    xs, ys = [], []
    for x, y in face_batches(DATA / split, with_labels=True)(config):
        xs.append(x)
        ys.extend(y)
    return np.concatenate(xs), np.asarray(ys)


def corrupted(x, seed):
    """A corrupted copy of normalised crops (the training augmentation's corruptions)."""
    m = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    s = np.array(IMAGENET_STD, np.float32)[:, None, None]
    g = torch.Generator().manual_seed(seed)
    out = [(corrupt(torch.from_numpy(np.clip(c * s + m, 0, 1)), g).numpy() - m) / s for c in x]
    return np.stack(out).astype(np.float32)


def qat_model(plain):
    from torch.ao import quantization as q
    from torchvision.models.quantization import mobilenet_v2

    model = mobilenet_v2(weights=None, quantize=False, num_classes=plain.classifier[1].out_features)
    model.load_state_dict(plain.state_dict())
    model.train()
    model.fuse_model(is_qat=True)
    act = q.FakeQuantize.with_args(observer=q.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                   dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    weight = q.FakeQuantize.with_args(observer=q.MovingAveragePerChannelMinMaxObserver, quant_min=-64,
                                      quant_max=63, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    model.qconfig = q.QConfig(activation=act, weight=weight)
    return q.prepare_qat(model)


def plain_state(qat) -> dict:
    """The fused QAT model's float weights under the plain model's names: ``P.N.bn.X`` is the
    batch norm that followed conv ``P.N``, i.e. ``P.(N+1).X``; fake-quant state is dropped."""
    out = {}
    for key, value in qat.state_dict().items():
        if "fake_quant" in key or "activation_post_process" in key or key.startswith(("quant.", "dequant.")):
            continue
        m = re.match(r"(.*)\.(\d+)\.bn\.(.*)$", key)
        out[f"{m.group(1)}.{int(m.group(2)) + 1}.{m.group(3)}" if m else key] = value
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(ROOT / "engines" / "default" / "mobilenetv2.pt"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    plain, config, _ = load_checkpoint(args.checkpoint)
    x, y = crops("Train", config)
    x = np.concatenate([x, corrupted(x, 1)])
    y = np.concatenate([y, y])
    model = qat_model(plain)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    for epoch in range(args.epochs):
        if epoch == 1:
            model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        if epoch == args.epochs - 1 and args.epochs > 1:
            model.apply(torch.ao.quantization.disable_observer)
        t, total, right = time.time(), 0.0, 0
        for idx in np.array_split(rng.permutation(len(x)), len(x) // 32):
            xb = torch.from_numpy(x[idx])
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb[flip] = xb[flip].flip(-1)
            logits = model(xb)
            loss = loss_fn(logits, torch.from_numpy(y[idx]).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            right += int((logits.detach().argmax(1).numpy() == y[idx]).sum())
        print(f"epoch {epoch}: loss {total / len(x):.4f} acc {right / len(x):.4f} ({time.time() - t:.0f} s)",
              flush=True)
    plain.load_state_dict(plain_state(model))
    recipe = {"from": str(args.checkpoint), "epochs": args.epochs, "lr": args.lr,
              "data": "realorfake Train, clean + corrupted"}
    save_checkpoint(args.out, plain.eval(), config, extra={"qat": recipe})
    print("wrote", args.out)


if __name__ == "__main__":
    main()
