"""``dfscan report``: the click command over ``scanner.report.write_report``."""
from __future__ import annotations

import click


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--top", default=32, show_default=True, type=click.IntRange(min=0),
              help="Show this many flagged faces (highest score_fake first) as thumbnails; 0 for none.")
@click.option("--images", default=None, type=click.Path(file_okay=False),
              help="Where the scanned images are now, if they moved (for the thumbnails). "
                   "Default: as recorded in the run.")
@click.option("--annotations", default=None, type=click.Path(dir_okay=False),
              help="The scan's annotation file, if it moved. Default: as recorded in the run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def report(out, top, images, annotations, quiet):
    """Write OUT/report.html and OUT/summary.json for OUT, the folder of a finished 'dfscan run'.

    report.html is one page that works offline (no scripts, every picture inside it): settings,
    counts by status, score histogram, ROC and precision-recall curves, the metrics table, the
    top flagged faces cropped again as the scan cropped them, and the errors by status.
    summary.json holds the counts, metrics, threshold, engine and versions for schedulers.

    Example: dfscan report results/ --top 64
    """
    from scanner.report.report import write_report

    html_path, summary_path = write_report(out, top=top, log=lambda m: click.echo(m, err=True),
                                           progress=not quiet, images=images, annotations=annotations)
    click.echo(f"wrote {html_path} and {summary_path}")
