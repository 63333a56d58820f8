"""``dfscan models``, ``dfscan engines``, ``dfscan detectors``: what this install can run."""
from __future__ import annotations

import click

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
def engines():
    """List the engine backends and whether this machine can run each."""
    from engines.backends import list_backends

    for entry in list_backends():
        ok, why = entry.available()
        click.echo(f"{entry.name:6s} {'/'.join(entry.suffixes):14s} {'yes' if ok else 'no ':3s}  "
                   f"{entry.description}: {why}")


@click.command()
def detectors():
    """List the face detectors and whether this machine can run each."""
    for entry in list_detectors():
        ok, why = entry.available()
        click.echo(f"{entry.name:6s} {'yes' if ok else 'no ':3s}  {entry.description}: {why}")
