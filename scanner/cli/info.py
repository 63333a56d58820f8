"""``dfscan models``, ``dfscan engines``, ``dfscan detectors``: what this install can run."""
from __future__ import annotations

import click

from scanner.cli.options import engine_options
from scanner.detect.detectors import list_detectors


@click.command()
def models():
    """List the registered architectures with their input size and normalisation."""
    from engines.models import get_model_entry, list_models

    for name in list_models():
        c = get_model_entry(name).config
        click.echo(f"{name:22s} {c.input_size[0]}x{c.input_size[1]}  mean={c.mean} std={c.std}  "
                   f"{c.pretrained_hint or ''}")

@click.command()
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint or engine file to choose for. Default: the bundled model.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
@engine_options
def engines(engine_path, device, engine_settings):
    """List the engine backends, whether this machine can run each, and which engine 'dfscan run'
    would use for ENGINE here and why (building and caching it if it is not cached yet).

    Example: dfscan engines --calib-data data/realorfake/Images/Train --gate-data data/realorfake/Images/Val
    """
    from engines.backends import list_backends
    from scanner.run.engine import choose
    from scanner.run.job import resolve_device
    from scanner.settings import RunSettings

    for entry in list_backends():
        ok, why = entry.available()
        click.echo(f"{entry.name:8s} {'/'.join(entry.suffixes):14s} {'yes' if ok else 'no ':3s}  "
                   f"{entry.description}: {why}")
    settings = RunSettings(device=resolve_device(device), **engine_settings)
    choice = choose(engine_path, settings, log=lambda m: click.echo(m, err=True))
    click.echo(f"dfscan run would use: {choice.reason}\n  {choice.path}")
    race = (choice.record or {}).get("race") or {}
    if race.get("raced"):
        others = race.get("other_cpu_cores")
        click.echo(f"  runtime race on this CPU (batch {race['batch']}, best of {race['rounds']}): "
                   + ", ".join(f"{n} {v:.0f} faces/s" for n, v in race["faces_per_s"].items())
                   + (f"; other processes kept {others:.1f} cores busy meanwhile" if others is not None else "")
                   + ("; provisional: the next run times them again" if race.get("provisional") else ""))
    gate = ((choice.record or {}).get("build") or {}).get("gate")
    if gate:
        label = "bf16" if choice.precision == "bf16" else "INT8"  # the figures' auc_int8 is the gated engine's
        click.echo(f"  {label} accuracy gate: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in gate.items()))


@click.command()
def detectors():
    """List the face detectors and whether this machine can run each."""
    for entry in list_detectors():
        ok, why = entry.available()
        click.echo(f"{entry.name:6s} {'yes' if ok else 'no ':3s}  {entry.description}: {why}")
