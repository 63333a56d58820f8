"""Train a registered architecture on an OpenForensics-layout dataset (``dfscan train``).

Laid out like torchvision's ``references/classification/train.py``: ``train_one_epoch``,
``evaluate`` and ``fit`` (the epoch loop: best-by-Val-AUC checkpoint, optional early stopping
and ReduceLROnPlateau, resumable from ``<out>.last.pt``). Adam and cross-entropy throughout.

Several data sources train together: each face carries its source's name and loss weight, Val
metrics are kept per source, and with more than one source the best epoch is the one with the
highest mean of the per-source Val AUCs, so a large source cannot drown a small one. The saved
checkpoint carries the decision threshold chosen on its epoch's Val scores (``threshold.py``).
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engines.checkpoint import read_checkpoint, save_checkpoint
from engines.errors import DfscanError
from engines.models import create_model, get_model_config, get_model_entry, resolve_pretrained
from engines.train.augment import Augmenter, corrupt_fixed
from engines.train.data import CropSet, Normalize
from engines.train.threshold import choose_threshold

VAL_CORRUPT_SEED = 20240611  # fixed: the corrupted Val copy is the same in every run


@dataclass
class TrainSettings:
    arch: str
    data: str | list[str]  # the sources as given (recorded in the checkpoint and history)
    out: str
    train_split: str = "Train"
    val_split: str = "Val"
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-4
    pretrained: str | None = "auto"
    resume: bool = False
    early_stop: int | None = None
    plateau: bool = False
    augment: str = "corruptions"
    clean_share: float = 0.3  # with augment='corruptions': the share of crops left uncorrupted
    precision: str = "fp32"  # 'bf16': bfloat16 autocast for training steps (evaluation stays fp32)
    ema: float | None = None  # decay per step of an exponential moving average of the weights
    seed: int = 0
    res: int | None = None  # input resolution; None: the model's own
    limit: int | None = None  # at most this many faces per split (smoke tests)
    source_weights: dict[str, float] | None = None  # loss weight per source name; 1 where absent
    target_fpr: float | None = None  # threshold rule: None = balanced accuracy (threshold.py)
    progress: bool = True


@dataclass
class FitResult:
    out: Path
    last: Path
    history: list[dict]
    best_epoch: int
    best: dict
    seconds: float


def last_path(out) -> Path:
    """Where the resumable state of ``out`` lives: ``model.pt`` → ``model.last.pt``."""
    out = Path(out)
    return out.with_name(out.stem + ".last" + (out.suffix or ".pt"))


def train_one_epoch(model, optimizer, data: CropSet, augment: Augmenter, normalize: Normalize,
                    batch_size: int, generator: torch.Generator, desc: str = "train",
                    progress: bool = True, bf16: bool = False, ema=None,
                    weights=None) -> tuple[float, float]:
    """One pass over ``data`` in a shuffled order. Returns ``(mean loss, accuracy)``.

    ``bf16`` runs the forward pass under CPU bfloat16 autocast (about twice as fast where the
    CPU has AVX512-BF16 or AMX); the weights and the optimiser stay fp32. ``ema`` (an
    ``AveragedModel``) is updated after every step. ``weights`` (N,) scales each face's loss
    (its source's weight); a batch's loss is the weighted mean.
    """
    from tqdm import tqdm

    model.train()
    order = torch.randperm(len(data), generator=generator)
    starts = [s for s in range(0, len(order), batch_size) if len(order) - s > 1]  # BN needs 2
    total_loss, correct, seen = 0.0, 0, 0
    with tqdm(starts, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True,
              leave=False) as bar:
        for s in bar:
            idx = order[s:s + batch_size]
            x, y = normalize(augment(data.images[idx])), data.labels[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x.contiguous(memory_format=torch.channels_last))
            each = F.cross_entropy(logits.float(), y, reduction="none")
            w = weights[idx] if weights is not None else torch.ones_like(each)
            if float(w.sum()) == 0:
                continue  # a batch of weight-0 faces teaches nothing
            loss = (each * w).sum() / w.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            total_loss += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
    return total_loss / max(seen, 1), correct / max(seen, 1)


def evaluate(model, images: torch.Tensor, labels: torch.Tensor, normalize: Normalize,
             batch_size: int = 64) -> dict:
    """Loss, accuracy (argmax) and ROC-AUC of ``model`` on crops (uint8 or float in [0, 1]).

    Returns a dict with ``loss``, ``acc``, ``auc`` (NaN with one class) and ``scores``
    (the softmax probability of Fake per crop, numpy).
    """
    from sklearn.metrics import roc_auc_score

    model.eval()
    logits = []
    with torch.inference_mode():
        for s in range(0, len(labels), batch_size):
            x = normalize(images[s:s + batch_size]).contiguous(memory_format=torch.channels_last)
            logits.append(model(x))
    logits = torch.cat(logits)
    scores = torch.softmax(logits, 1)[:, 1].numpy()
    y = labels.numpy()
    return {"loss": float(F.cross_entropy(logits, labels)),
            "acc": float((logits.argmax(1) == labels).float().mean()),
            "auc": float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else math.nan,
            "scores": scores}


def _better(a: dict, b: dict | None) -> bool:
    """Higher Val AUC (the mean over sources with several) wins; a tie goes to the lower Val loss."""
    if b is None:
        return True
    key = "val_auc_mean" if "val_auc_mean" in a else "val_auc"
    auc_a = -math.inf if math.isnan(a[key]) else a[key]
    auc_b = -math.inf if math.isnan(b[key]) else b[key]
    return auc_a > auc_b or (auc_a == auc_b and a["val_loss"] < b["val_loss"])


def column_name(source: str) -> str:
    """A source name as a snake_case column suffix: ``FF++ clips`` → ``ff_clips``."""
    return re.sub(r"[^0-9a-z]+", "_", source.lower()).strip("_") or "source"


def per_source(val: CropSet, scores) -> dict:
    """``{val_auc_<source>, val_acc_<source>}`` for each source of ``val`` (accuracy at 0.5,
    as ``val_acc``), plus ``val_auc_mean`` over the sources with both classes when there are
    several sources."""
    from sklearn.metrics import roc_auc_score

    names = val.source_names()
    if len(names) < 2:
        return {}
    out, aucs = {}, []
    y, s = val.labels.numpy(), np.asarray(scores)
    for name in names:
        m = val.source_mask(name).numpy()
        auc = float(roc_auc_score(y[m], s[m])) if len(np.unique(y[m])) == 2 else math.nan
        out[f"val_auc_{column_name(name)}"] = auc
        out[f"val_acc_{column_name(name)}"] = float(((s[m] >= 0.5) == y[m]).mean())
        if not math.isnan(auc):
            aucs.append(auc)
    out["val_auc_mean"] = float(np.mean(aucs)) if aucs else math.nan
    return out


def _model_and_config(s: TrainSettings, pretrained):
    config = get_model_config(s.arch)
    if s.res is not None:
        if s.res < 32:
            raise DfscanError("--res must be at least 32 pixels")
        config = config.with_input_size(s.res)
    model = create_model(s.arch, pretrained=pretrained, input_size=config.input_size)
    return model, config


def _history_row(epoch, train_loss, train_acc, val, val_c, lr, seconds, sources: dict) -> dict:
    return {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val["loss"], "val_acc": val["acc"], "val_auc": val["auc"],
            "val_auc_corrupt": val_c["auc"], "val_acc_corrupt": val_c["acc"],
            **sources, "lr": lr, "seconds": seconds}


class _Loop:
    """Everything a run carries from epoch to epoch, and its resumable state in ``.last.pt``."""

    def __init__(self, s: TrainSettings, model):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.model = model
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(s.ema), use_buffers=True)
                    if s.ema else None)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
        self.scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=0.5, patience=2) if s.plateau else None)
        self.shuffle = torch.Generator().manual_seed(s.seed)
        self.augment = Augmenter(s.augment, p_clean=s.clean_share, seed=s.seed + 1)
        self.history: list[dict] = []
        self.best_epoch = self.stale = 0

    @property
    def scored(self):
        """The weights that are evaluated and kept: the moving average where there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def best(self) -> dict | None:
        return self.history[self.best_epoch - 1] if self.best_epoch else None

    def state(self, epoch: int, settings: dict) -> dict:
        return {"epoch": epoch, "settings": settings, "history": self.history,
                "best_epoch": self.best_epoch, "stale": self.stale,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng_torch": torch.get_rng_state(), "rng_shuffle": self.shuffle.get_state(),
                "rng_augment": self.augment.state()}

    def restore(self, extra: dict) -> int:
        """Load a ``.last.pt`` extra dict; returns the first epoch still to train."""
        self.optimizer.load_state_dict(extra["optimizer"])
        if self.scheduler is not None and extra.get("scheduler"):
            self.scheduler.load_state_dict(extra["scheduler"])
        if self.ema is not None and extra.get("ema"):
            self.ema.load_state_dict(extra["ema"])
        torch.set_rng_state(extra["rng_torch"])
        self.shuffle.set_state(extra["rng_shuffle"])
        self.augment.set_state(extra["rng_augment"])
        self.history, self.best_epoch = list(extra["history"]), extra["best_epoch"]
        self.stale = extra["stale"]
        return extra["epoch"] + 1


def _open(s: TrainSettings, log):
    """``(model, config, last.pt payload or None)``: fresh, or as ``--resume`` left it."""
    last = last_path(s.out)
    torch.manual_seed(s.seed)
    if not s.resume:
        model, config = _model_and_config(s, s.pretrained)
        weights = resolve_pretrained(s.arch, s.pretrained)
        log(f"init: {'weights from ' + str(weights) if weights else 'random (from scratch)'}")
        return model, config, None
    if not last.is_file():
        raise DfscanError(f"{last}: nothing to resume (train without --resume first)")
    state = read_checkpoint(last)
    if state["arch"] != s.arch:
        raise DfscanError(f"{last}: holds a {state['arch']!r} run, not {s.arch!r}")
    config = get_model_config(s.arch).with_input_size(tuple(state["config"]["input_size"]))
    model = create_model(s.arch, None, input_size=config.input_size)
    model.load_state_dict(state["state_dict"])
    return model, config, state


def fit(s: TrainSettings, crops, log=print) -> FitResult:
    """Train ``s.arch`` and write ``s.out`` (best epoch), ``<out>.last.pt`` (resumable state),
    ``history.parquet`` and PNG curves beside it. Returns a FitResult.

    ``crops(split, config)`` yields that split's labelled faces as batches of
    ``(uint8 crops (N, 3, H, W), labels, face ids)`` cropped for ``config`` (``dfscan train``
    passes the scan pipeline's, ``scanner.run.training.split_crops``).

    Raises DfscanError for unusable data, a missing ``--resume`` state or a different
    architecture in it.
    """
    from engines.train import plots

    get_model_entry(s.arch)  # unknown names fail before the data is cropped
    if s.precision not in ("fp32", "bf16"):
        raise DfscanError(f"--precision {s.precision!r}: choose fp32 or bf16")
    if not 0 <= s.clean_share <= 1:
        raise DfscanError(f"--clean-share {s.clean_share}: give a share between 0 and 1")
    if s.ema is not None and not 0 < s.ema < 1:
        raise DfscanError(f"--ema {s.ema}: the decay must lie between 0 and 1, e.g. 0.97")
    if s.target_fpr is not None and not 0 <= s.target_fpr < 1:
        raise DfscanError(f"--target-fpr {s.target_fpr}: give a rate between 0 and 1, e.g. 0.05")
    out, last = Path(s.out), last_path(s.out)
    model, config, state = _open(s, log)
    train = CropSet.collect(s.train_split, crops(s.train_split, config))
    val = CropSet.collect(s.val_split, crops(s.val_split, config))
    val_corrupt = corrupt_fixed(val.images, VAL_CORRUPT_SEED)
    weights = train.loss_weights(s.source_weights)
    log(f"{s.arch} {config.input_size[0]}x{config.input_size[1]}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters; {train.counts()}; {val.counts()}")

    normalize = Normalize(config)
    loop = _Loop(s, model.to(memory_format=torch.channels_last))  # faster oneDNN convs on CPU
    start = 1
    if state is not None:
        start = loop.restore(state["extra"])
        log(f"resuming {last} after epoch {start - 1} (best so far: epoch {loop.best_epoch})")
    settings = {k: v for k, v in asdict(s).items() if k != "progress"}
    t_fit = time.perf_counter()
    for epoch in range(start, s.epochs + 1):
        t0 = time.perf_counter()
        lr = loop.optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_one_epoch(loop.model, loop.optimizer, train, loop.augment,
                                                normalize, s.batch_size, loop.shuffle,
                                                f"epoch {epoch}/{s.epochs}", s.progress,
                                                s.precision == "bf16", loop.ema, weights)
        val_m = evaluate(loop.scored, val.images, val.labels, normalize)
        val_c = evaluate(loop.scored, val_corrupt, val.labels, normalize)
        threshold, rule = choose_threshold(val.labels.numpy(), val_m["scores"], s.target_fpr)
        row = _history_row(epoch, train_loss, train_acc, val_m, val_c, lr, time.perf_counter() - t0,
                           {**per_source(val, val_m["scores"]), "threshold": threshold})
        loop.history.append(row)
        if loop.scheduler is not None:
            loop.scheduler.step(val_m["loss"])
        improved = _better(row, loop.best)
        if improved:
            loop.best_epoch, loop.stale = epoch, 0
            save_checkpoint(out, loop.scored,
                            dataclasses.replace(config, threshold=threshold, threshold_rule=rule), {
                                "epoch": epoch, "settings": settings,
                                "val": {k: v for k, v in row.items() if k != "epoch"}})
            plots.plot_roc_det(val.labels.numpy(), val_m["scores"], out.parent,
                               f"{s.arch} {s.val_split}, epoch {epoch}")
        else:
            loop.stale += 1
        by_source = "".join(f" {k[8:]} {v:.4f}" for k, v in row.items()
                            if k.startswith("val_auc_") and k not in ("val_auc_corrupt", "val_auc_mean"))
        log(f"epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.3f} | val loss "
            f"{val_m['loss']:.4f} acc {val_m['acc']:.3f} AUC {val_m['auc']:.4f}"
            f"{' (by source:' + by_source + ')' if by_source else ''} | corrupted val "
            f"AUC {val_c['auc']:.4f} | lr {lr:.2g} | {row['seconds']:.0f} s{' *' if improved else ''}"
            + f" | threshold {threshold:.3f} ({rule})")
        save_checkpoint(last, loop.model, config, loop.state(epoch, settings))
        plots.write_history(loop.history, out.parent / "history.parquet", settings)
        plots.plot_curves(loop.history, out.parent / "curves.png", s.arch)
        if s.early_stop and loop.stale >= s.early_stop:
            log(f"early stop: Val AUC/loss has not improved for {loop.stale} epochs")
            break
    if not loop.history:
        raise DfscanError(f"--epochs {s.epochs}: nothing to train")
    if start > s.epochs:
        log(f"{last} already holds {start - 1} epochs; raise --epochs to train further")
    return FitResult(out, last, loop.history, loop.best_epoch, loop.best,
                     time.perf_counter() - t_fit)
