"""``dfscan explain``: Grad-CAM / saliency maps for chosen faces of a finished scan."""
from __future__ import annotations

import click


@click.command()
@click.argument("faces", type=click.Path(dir_okay=False))
@click.option("--engine", default=None, type=click.Path(dir_okay=False),
              help="Torch checkpoint (.pt) to explain; for .onnx/.plan the .pt of the same name "
                   "beside it is used. Default: the scan's own engine.")
@click.option("--select", default="top-fake", show_default=True, metavar="top-fake|misclassified|ids:1,5,9",
              help="Which faces: highest score_fake, wrong predictions (most confident first), or these face_ids.")
@click.option("--limit", default=32, show_default=True, help="At most this many faces (top-fake, misclassified).")
@click.option("--method", "methods", type=click.Choice(["gradcam", "gradcam++", "saliency"]),
              multiple=True, default=["gradcam"], show_default=True,
              help="Map of the evidence for Fake; repeat for several (side by side in OUT/compare.png).")
@click.option("--compare", multiple=True, type=click.Path(dir_okay=False), metavar="CKPT",
              help="Another checkpoint to map the same faces with (repeatable): adds OUT/compare.png.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder. Default: explain/ beside FACES.")
@click.option("--images", default=None, type=click.Path(file_okay=False),
              help="Where the scanned images are now, if they moved. Default: as recorded in FACES.")
@click.option("--annotations", default=None, type=click.Path(dir_okay=False),
              help="The scan's annotation file, if it moved. Default: as recorded in FACES.")
@click.option("--batch-size", default=16, show_default=True, help="Faces per batch.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def explain(faces, engine, select, limit, methods, compare, out_dir, images, annotations, batch_size,
            device, quiet):
    """Grad-CAM / saliency maps for chosen faces of FACES (a faces.parquet from 'dfscan run').

    The faces are cropped again as the scan cropped them, and the maps computed on the torch
    checkpoint. Writes OUT/<checkpoint>/face_<id>_<method>.png (crop beside its map),
    OUT/contact_sheet.png, OUT/compare.png (with --compare or several --method) and
    OUT/explain.parquet.

    Example: dfscan explain results/faces.parquet --engine model.pt --select misclassified --limit 16
    """
    from scanner.explain.explain import run_explain

    summary = run_explain(faces, engine, select, limit, methods, compare, out_dir, batch_size,
                                       device, images, annotations, progress=not quiet,
                                       log=lambda m: click.echo(m, err=True))
    click.echo(summary.line())
