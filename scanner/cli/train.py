"""``dfscan train`` and ``dfscan eval``: click commands over ``engines.train`` and ``scanner.run``.

Training gets its crops from the scan's own pipeline (``scanner.run.training``), handed to
``engines.train`` as plain batches; nothing heavy is imported until a command runs.
"""
from __future__ import annotations

from pathlib import Path

import click

from scanner.cli.options import detect_options, engine_options, threshold_option

# the --augment choices; engines.train.augment holds the same tuple but imports torch, which would slow
# every `dfscan` start (a test keeps the two equal)
AUGMENT_MODES = ("none", "light", "corruptions")


def _pretrained(value: str) -> str | None:
    return None if value.lower() == "none" else value


def video_source_options(func):
    """``--labels`` and ``--frames-per-video`` for video sources, plus the detection options."""
    from scanner.pipeline.frames import DEFAULT_FRAMES_PER_VIDEO

    func = detect_options(func)
    func = click.option("--frames-per-video", type=click.IntRange(min=1), default=DEFAULT_FRAMES_PER_VIDEO,
                        show_default=True, help="Video sources: frames sampled per clip, evenly spaced in time "
                                                "(as 'dfscan run'); their detected boxes are cached per clip.")(func)
    return click.option("--labels", "labels_csv", type=click.Path(dir_okay=False), default=None,
                        help="Video sources: CSV with columns file (relative to the source's folder) and "
                             "label (real/fake or 0/1), and optionally group (clips that must stay on one "
                             "side of the split, e.g. a face swap and its source clip); other columns are "
                             "ignored. Default: a clip's top folder real/ or fake/.")(func)


@click.command()
@click.option("--arch", required=True, help="Architecture (see 'dfscan models').")
@click.option("--data", "data", required=True, multiple=True, metavar="[NAME=]PATH[:WEIGHT]",
              help="A training source; repeat for several. PATH: an OpenForensics root "
                   "(ROOT/Images/<Split>/, ROOT/<Split>_poly.json), a folder with real/ and fake/ "
                   "face images, split by file-name prefix before '__' (clip or identity), or a "
                   "folder of video files (labels: --labels or real/ and fake/), split by clip. NAME "
                   "(default: the folder's name) labels its metrics; WEIGHT (default 1) scales its "
                   "faces in the loss.")
@click.option("--train-split", default="Train", show_default=True)
@click.option("--val-split", default="Val", show_default=True,
              help="Split that picks the best epoch (by ROC-AUC, ties by loss; with several "
                   "sources, by the mean of their Val AUCs).")
@click.option("--val-share", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25,
              show_default=True, help="Folder sources: the share of each class's faces (whole "
                                      "groups) held out for validation; video sources: of its clips.")
@click.option("--target-fpr", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Store the lowest threshold whose Val false-positive rate is at most this. "
                   "Default: the threshold of best Val balanced accuracy.")
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=2))
@click.option("--lr", default=1e-4, show_default=True, help="Adam learning rate.")
@click.option("--pretrained", default="auto", show_default=True,
              help="Initial weights: a .pth file or a dfscan checkpoint (fine-tuning), 'auto' "
                   "(an installed offline ImageNet weights package) or 'none'.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint of the best epoch; OUT's stem + .last.pt holds the resumable state, "
                   "history.parquet and the PNGs go beside it.")
@click.option("--resume", is_flag=True, help="Continue from the .last.pt beside --out.")
@click.option("--early-stop", type=click.IntRange(min=1), default=None,
              help="Stop after N epochs without a better Val AUC/loss. Default: never.")
@click.option("--plateau", is_flag=True, help="Halve the learning rate when Val loss stalls for 2 epochs.")
@click.option("--augment", type=click.Choice(AUGMENT_MODES), default="corruptions", show_default=True,
              help="none; light (h-flip, mild brightness/contrast); corruptions (h-flip plus random "
                   "noise, blur, JPEG, down-up scaling, contrast, brightness, gamma, saturation).")
@click.option("--clean-share", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="With --augment corruptions: the share of crops left uncorrupted (h-flip only).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: bfloat16 autocast for training steps, about 2x faster on CPUs with "
                   "AVX512-BF16/AMX; Val scoring and the saved weights stay fp32.")
@click.option("--ema", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Score and keep an exponential moving average of the weights with this decay "
                   "per step (e.g. 0.97). Default: the raw weights.")
@click.option("--seed", default=0, show_default=True)
@click.option("--res", type=click.IntRange(min=32), default=None,
              help="Input resolution (default: the model's own).")
@click.option("--limit", type=click.IntRange(min=2), default=None,
              help="Use at most N faces per split, Real and Fake alternating (smoke tests).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@video_source_options
def train(arch, data, train_split, val_split, val_share, target_fpr, epochs, batch_size,
          lr, pretrained, out, resume, early_stop, plateau, augment, clean_share, precision, ema, seed,
          res, limit, quiet, labels_csv, frames_per_video, detect):
    """Train ARCH on face crops made by the same DALI pipeline as 'dfscan run'; the checkpoint
    carries the decision threshold chosen on Val (see --target-fpr), which 'dfscan run' uses.

    Example: dfscan train --arch mobilenetv2 --data data/realorfake --epochs 12 --out runs/mnv2/model.pt

    Several sources: dfscan train --arch mobilenetv2 --data data/realorfake
    --data clips=/tmp/video-faces:2 --out runs/multi/model.pt

    Video clips: dfscan train --arch mobilenetv2 --data clips=data/videos --labels labels.csv
    --frames-per-video 16 --out runs/videos/model.pt
    """
    from engines.models import get_model_config
    from engines.train.loop import TrainSettings, fit
    from scanner.run.sources import parse_sources, source_crops
    from scanner.run.videos import VideoSettings
    from scanner.settings import batch_for, batch_note

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    # training holds activations and gradients per face, so its batch keeps the scan's pixel budget
    # too; batch norm needs two faces
    size = res or get_model_config(arch).input_size
    fitted = max(2, batch_for(size, batch_size))
    if fitted != batch_size:
        log(batch_note(size, batch_size, fitted))
        batch_size = fitted
    sources = parse_sources(data, labels_csv)
    settings = TrainSettings(arch=arch, data=list(data), out=out, train_split=train_split,
                             val_split=val_split, epochs=epochs, batch_size=batch_size, lr=lr,
                             pretrained=_pretrained(pretrained), resume=resume,
                             early_stop=early_stop, plateau=plateau, augment=augment,
                             clean_share=clean_share,
                             precision=precision, ema=ema, seed=seed,
                             res=res, limit=limit, progress=not quiet,
                             source_weights={s.name: s.weight for s in sources},
                             target_fpr=target_fpr)
    crops = source_crops(sources, train_split, val_split, val_share, limit=limit, log=log, detect=detect,
                         videos=VideoSettings(frames_per_video=frames_per_video, labels=labels_csv))
    result = fit(settings, crops, log=log)
    b = result.best
    click.echo(f"best epoch {result.best_epoch}: {val_split} AUC {b['val_auc']:.4f}, acc "
               f"{b['val_acc']:.4f}, loss {b['val_loss']:.4f}, threshold {b['threshold']:.4f} "
               f"-> {result.out} ({result.seconds:.0f} s this session)")


@click.command("eval")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False), default=None,
              help="Engine file (.pt, .onnx, .plan). Default: the bundled model.")
@click.option("--data", "data", required=True, multiple=True, metavar="[NAME=]PATH",
              help="A labelled source, as for 'dfscan train' (an OpenForensics root, real/ + fake/ "
                   "folders, or a folder of video files); repeat for several: one metrics row set per source.")
@click.option("--split", default="Test-Dev", show_default=True, help="OpenForensics sources: the split.")
@click.option("--held-out", is_flag=True,
              help="Folder and video sources: only the groups 'dfscan train' held out for validation "
                   "(same --val-share and --labels). Default: every image or clip.")
@click.option("--val-share", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25,
              show_default=True, help="With --held-out: the share 'dfscan train' used.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@threshold_option
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
@engine_options
@click.option("--overwrite", is_flag=True, help="Replace results already in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@video_source_options
def evaluate(engine_path, data, split, held_out, val_share, out_dir, batch_size, threshold, device,
             engine_settings, overwrite, quiet, labels_csv, frames_per_video, detect):
    """Score labelled faces: OUT/faces.parquet, OUT/metrics.parquet, OUT/roc.png, OUT/det.png.

    One OpenForensics source keeps that layout. Otherwise (several sources, or a folder source)
    each source is scanned into OUT/<NAME>/ (a folder source's whole-image annotations go to
    OUT/<NAME>_poly.json) and OUT/metrics.parquet holds every source's rows with a leading
    'source' column. A video source is scanned as 'dfscan run --labels' scans clips (its chosen
    clips' labels go to OUT/<NAME>_labels.csv); its metrics rows are face-level (every sampled
    face counts), its per-clip verdicts are in OUT/<NAME>/video_metrics.parquet.

    Example: dfscan eval --data data/realorfake --split Test-Challenge --out results/challenge

    Several sources: dfscan eval --data data/realorfake --data dfdc=data/dfdc-crops --out results/all

    Held-out clips: dfscan eval --engine runs/videos/model.pt --data clips=data/videos --labels labels.csv
    --held-out --out results/clips
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engines.files import write_table
    from engines.train.plots import plot_roc_det
    from scanner.catalog import split_paths
    from scanner.errors import DfscanError
    from scanner.output.metrics import METRICS_SCHEMA
    from scanner.run.job import run_job
    from scanner.run.sources import folder_annotations, parse_sources, video_labels
    from scanner.run.videos import VideoSettings
    from scanner.settings import RunSettings

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    sources = parse_sources(data, labels_csv)
    engine_name = Path(engine_path).name if engine_path else "default model"
    rows = []
    by_source = len(sources) > 1 or sources[0].kind != "openforensics"
    for source in sources:
        out = Path(out_dir) / source.name if by_source else Path(out_dir)
        videos = VideoSettings(frames_per_video=0)  # image sources: their videos are not labelled faces
        if source.kind == "openforensics":
            images, annotations = split_paths(source.path, split)
            what = f"{source.name} {split}"
        elif source.kind == "videos":
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            images, annotations = source.path, None
            labels, chosen = video_labels(source, Path(out_dir) / f"{source.name}_labels.csv", held_out,
                                          val_share, log)
            videos = VideoSettings(frames_per_video=frames_per_video, labels=str(labels.resolve()), only=chosen,
                                   box_cache=True)
            what = f"{source.name}{' held-out clips' if held_out else ''} (face-level)"
        else:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            images = source.path
            annotations = folder_annotations(source, Path(out_dir) / f"{source.name}_poly.json",
                                             held_out, val_share, log)
            what = f"{source.name}{' held-out groups' if held_out else ''}"
        # the engine is chosen as 'dfscan run' chooses it (--backend/--precision override it)
        settings = RunSettings(batch_size=batch_size, device=device, threshold=threshold, **engine_settings)
        summary = run_job(images, out, engine_path, annotations, settings, overwrite=overwrite,
                          progress=not quiet, log=log, detect=detect if source.kind == "videos" else None,
                          videos=videos)
        if summary.metrics_path is None:
            raise DfscanError(f"{annotations}: no face has both a label and a score")
        faces = pq.read_table(summary.faces_path).to_pydict()
        ok = [i for i, st in enumerate(faces["status"]) if st == "ok" and faces["label"][i] is not None]
        plot_roc_det([faces["label"][i] for i in ok], [faces["score_fake"][i] for i in ok],
                     out, f"{engine_name} on {what}")
        metrics = pq.read_table(summary.metrics_path)
        if source.kind == "videos":
            log(f"{source.name}: metrics are face-level (every sampled face counts); per-clip verdicts in "
                f"{out / 'video_metrics.parquet'}")
        rows += [{"source": source.name, **row} for row in metrics.to_pylist()]
    if by_source:
        schema = pa.schema([("source", pa.string()), *METRICS_SCHEMA])
        write_table(Path(out_dir) / "metrics.parquet", pa.Table.from_pylist(rows, schema=schema),
                    {"sources": [str(s.path) for s in sources], "split": split, "held_out": held_out})
    for row in rows:
        click.echo(f"{row['source'][:14]:14s} {row['subset']:15s} n={row['n']:4d}  acc {row['accuracy']:.4f}  "
                   f"P {row['precision']:.4f}  R {row['recall']:.4f}  F1 {row['f1']:.4f}  AUC "
                   f"{row['roc_auc']:.4f}  EER {row['eer']:.4f}  threshold {row['threshold']:.4g} "
                   f"({row['threshold_origin']})")
