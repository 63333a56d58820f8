"""The page of ``dfscan report``: plain HTML tables, CSS inline, no scripts, nothing remote.

Every string that comes from the run (file names, reasons, paths, settings) goes through
``html.escape``: file names are user input and may hold markup.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

LABELS = {0: "Real", 1: "Fake", None: "unlabelled"}
THUMB_COLUMNS = 8
METRIC_COLUMNS = ("subset", "n", "n_real", "n_fake", "tp", "fp", "tn", "fn", "accuracy", "precision",
                  "recall", "f1", "roc_auc", "eer")
SETTINGS = ("engine", "backend", "arch", "input_size", "crop_margin", "threshold", "device", "batch_size",
            "max_pixels", "images", "annotations", "detector", "det_margin", "det_max_side", "det_min_face",
            "det_min_score")

CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1250px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.4em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; font-size: 0.9em; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.thumbs td { text-align: center; width: 132px; padding: 3px 4px; font-size: 0.78em; word-break: break-all; }
table.thumbs img { display: block; margin: 0 auto 3px auto; }
.fake { color: #b2182b; font-weight: bold; } .real { color: #2166ac; }
.note { color: #8a5a00; } .muted { color: #666; }
code { font-size: 0.9em; word-break: break-all; }
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """``rows`` hold ready HTML cells (``<td>…</td>``); ``header`` plain text."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "\n".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>\n{body}</table>'


def _td(value, num: bool = False) -> str:
    return f'<td class="num">{_num(value)}</td>' if num else f"<td>{esc(value)}</td>"


def _img(uri: str, alt: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img src="{esc(uri)}" alt="{esc(alt)}"{size}>'


def _settings(run, summary: dict) -> str:
    meta = run.meta
    rows = [[_td(k), f"<td><code>{esc(json.dumps(meta[k]) if isinstance(meta[k], list) else meta[k])}</code></td>"]
            for k in SETTINGS if k in meta]
    rows.append([_td("duration"), _td("not recorded" if summary["duration_s"] is None
                                      else f"{summary['duration_s']:.1f} s")])
    versions = ", ".join(f"{k} {v}" for k, v in summary["versions"].items())
    rows.append([_td("versions"), _td(versions)])
    return _table(["setting", "value"], rows)


def _counts(summary: dict) -> str:
    head = _table(["faces", "images", "flagged (pred Fake)"],
                  [[_td(summary["faces"], True), _td(summary["images"], True), _td(summary["flagged"], True)]])
    statuses = _table(["status", "faces"], [[_td(s), _td(n, True)] for s, n in summary["by_status"].items()])
    return head + statuses


def _metrics(summary: dict) -> str:
    if summary["metrics"] is None:
        return '<p class="muted">No labels in this run: no metrics.</p>'
    rows = [summary["metrics"]["all"], *summary["metrics"]["subsets"]]
    cells = [[_td(r.get(c), num=c != "subset") for c in METRIC_COLUMNS] for r in rows if r]
    threshold = rows[0]["threshold"] if rows and rows[0] else None
    return (f'<p class="muted">Fake is the positive class; threshold {esc(threshold)}; '
            "one row per <code>corruption</code> value after <code>all</code>.</p>"
            + _table(list(METRIC_COLUMNS), cells))


def _plots(plots: dict) -> str:
    if not plots:
        return '<p class="muted">No scored faces: nothing to plot.</p>'
    parts = [_img(plots["histogram"], "histogram of score_fake")] if "histogram" in plots else []
    if "roc" in plots:
        parts.append("<br>" + _img(plots["roc"], "ROC curve") + " " + _img(plots["pr"], "precision-recall curve"))
    else:
        parts.append('<p class="muted">ROC and precision–recall curves need labelled Real and Fake faces.</p>')
    return "\n".join(parts)


def _thumb_cell(t) -> str:
    label = LABELS.get(t.label, t.label)
    cls = {1: "fake", 0: "real"}.get(t.label, "muted")
    picture = _img(t.uri, f"face {t.face_id}") if t.uri else '<div class="note">no crop</div>'
    return (f"<td>{picture}score_fake <b>{t.score_fake:.3f}</b><br>"
            f'<span class="{cls}">{esc(label)}</span> · face {t.face_id}<br>'
            f"<code>{esc(Path(t.file).name)}</code></td>")


def _thumbs(thumbs: list, note: str | None, flagged: int) -> str:
    if not thumbs:
        return '<p class="muted">No flagged faces.</p>'
    text = (f'<p class="muted">The {len(thumbs)} highest-scoring of {flagged:,} flagged faces, as the scan '
            "cropped them (face box enlarged by the model's crop margin, resized to its input).</p>")
    if note:
        text += f'<p class="note">{esc(note)}</p>'
    rows = [[_thumb_cell(t) for t in thumbs[i:i + THUMB_COLUMNS]] for i in range(0, len(thumbs), THUMB_COLUMNS)]
    body = "\n".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f'{text}<table class="thumbs">{body}</table>'


def _errors(groups: dict) -> str:
    if not groups:
        return "<p>Every face was scanned (status ok).</p>"
    rows = []
    for status, group in groups.items():
        examples = "<br>".join(f"<code>{esc(f)}</code>: {esc(e)}" for f, e in group["examples"])
        more = group["count"] - len(group["examples"])
        if more > 0:
            examples += f'<br><span class="muted">… and {more:,} more</span>'
        rows.append([_td(status), _td(group["count"], True), f"<td>{examples}</td>"])
    return _table(["status", "faces", "first files: reason"], rows)


def render_page(run, summary: dict, plots: dict, thumbs: list, thumb_note: str | None, errors: dict) -> str:
    """The whole report page as one string."""
    title = f"dfscan report · {run.dir.resolve().name}"
    sections = [
        ("Run", _settings(run, summary)),
        ("Counts", _counts(summary)),
        ("Scores", _plots(plots)),
        ("Metrics", _metrics(summary)),
        ("Top flagged faces", _thumbs(thumbs, thumb_note, summary["flagged"])),
        ("Errors by status", _errors(errors)),
    ]
    body = "\n".join(f"<h2>{esc(name)}</h2>\n{content}" for name, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="muted">Run folder <code>{esc(summary['run_dir'])}</code>; report made {esc(summary['generated_at'])}.</p>
{body}
</body></html>
"""
