"""A uniform weight soup (Wortsman et al. 2022, arXiv:2203.05482) of dfscan checkpoints (issue 16).

Checkpoints fine-tuned from the same ImageNet weights with different seeds lie in one basin of
the loss; the mean of their weights is a single model of the same size and speed (unlike an
ensemble of outputs, which costs one forward pass per member) that is usually better calibrated and
more robust than any one of them. Here every floating-point tensor, batch-norm running statistics
included, is averaged; integer buffers (``num_batches_tracked``) come from the first checkpoint.

The soup is scored on the validation split by the scan's own crops (clean and the fixed corrupted
copy ``dfscan train`` uses), and carries the decision threshold chosen there by the rule of
``dfscan train`` (``engines.train.threshold``: balanced accuracy, or ``--target-fpr``). Nothing
here reads a test split. Given one checkpoint, its weights are kept as they are (a soup of one) and
only the threshold is chosen and stored: how the bundled model got its threshold.

    PYTHONPATH=$PWD python benchmarks/training/soup.py engines/default/mobilenetv2.pt \
        runs/seed1/model.pt runs/seed2/model.pt --data ../shared/data/realorfake --out runs/soup/model.pt
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from engines.cache import file_sha256
from engines.checkpoint import read_checkpoint, save_checkpoint
from engines.config import ModelConfig
from engines.models import create_model
from engines.train.augment import corrupt_fixed
from engines.train.data import CropSet, Normalize
from engines.train.loop import VAL_CORRUPT_SEED, evaluate
from engines.train.threshold import choose_threshold
from scanner.run.training import split_crops


def mean_state(states: list[dict]) -> dict:
    """The element-wise mean of ``states``' floating-point tensors; other entries from the first."""
    if any(s.keys() != states[0].keys() for s in states):
        raise SystemExit("the checkpoints hold different layers: a soup needs one architecture")
    return {k: (torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v)
            for k, v in states[0].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="dfscan checkpoints of one architecture and input size "
                    "(one: its weights as they are, the threshold stored)")
    ap.add_argument("--data", required=True, help="OpenForensics root whose --val-split scores the soup")
    ap.add_argument("--val-split", default="Val")
    ap.add_argument("--target-fpr", type=float, default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    payloads = [read_checkpoint(p) for p in a.checkpoints]
    configs = [ModelConfig.from_dict(p["config"]) for p in payloads]
    crop_fields = {(c.arch, tuple(c.input_size), c.crop_margin, tuple(c.mean), tuple(c.std)) for c in configs}
    if len(crop_fields) > 1:
        raise SystemExit(f"the checkpoints differ in architecture or crop convention: {sorted(crop_fields)}")
    config = dataclasses.replace(configs[0], threshold=None, threshold_rule="")
    val = CropSet.collect(a.val_split, split_crops(a.data, a.val_split, config, log=lambda m: None))
    x, y = val.images, val.labels
    x_c, norm = corrupt_fixed(x, VAL_CORRUPT_SEED), Normalize(config)

    def model_of(state):
        m = create_model(config.arch, None, input_size=config.input_size)
        m.load_state_dict(state)
        return m.eval()

    def scored(name, model):
        clean, corrupt = evaluate(model, x, y, norm), evaluate(model, x_c, y, norm)
        print(f"{name}: {a.val_split} AUC {clean['auc']:.4f} loss {clean['loss']:.4f} acc {clean['acc']:.3f}"
              f" | corrupted AUC {corrupt['auc']:.4f} loss {corrupt['loss']:.4f}", flush=True)
        return clean, corrupt

    if len(payloads) > 1:
        for path, p in zip(a.checkpoints, payloads):
            scored(path, model_of(p["state_dict"]))
    soup = model_of(mean_state([p["state_dict"] for p in payloads]))
    clean, corrupt = scored("soup" if len(payloads) > 1 else a.checkpoints[0], soup)
    threshold, rule = choose_threshold(y.numpy(), clean["scores"], a.target_fpr)
    print(f"threshold {threshold:.4f} ({rule}, {a.val_split})")
    first = payloads[0].get("extra", {})
    extra = {**first, "threshold": {"split": a.val_split, "rule": rule, "val_auc": clean["auc"],
                                    "val_loss": clean["loss"], "val_auc_corrupt": corrupt["auc"]}}
    if len(payloads) > 1:  # the soup keeps the first ingredient's settings (its val_split, data …)
        extra["soup"] = [{"path": str(path), "sha256": file_sha256(path), "epoch": p.get("extra", {}).get("epoch")}
                         for path, p in zip(a.checkpoints, payloads)]
    save_checkpoint(Path(a.out), soup, dataclasses.replace(config, threshold=threshold, threshold_rule=rule), extra)
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
