"""The ``dfscan`` command line: a thin click layer over ``scanner`` and ``engines``.

One module per command below this package; this one holds the group and the one error boundary
every command runs inside (``DfscanGroup.invoke``): a DfscanError becomes one line on stderr and
exit 1, an interrupted run (Ctrl-C, or SIGTERM where the command asked for it) exit 130 with
what to do next. Nothing in ``scanner`` or ``engines`` imports this package.
"""
from __future__ import annotations

import sys

import click

from scanner.errors import DfscanError, RunInterrupted

EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


class DfscanGroup(click.Group):
    """The error boundary: library errors become one line, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RunInterrupted as exc:
            click.echo(str(exc), err=True)
            sys.exit(EXIT_INTERRUPTED)
        except DfscanError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=DfscanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dfscan")
def main():
    """Scan image collections for deepfake faces: DALI decode + crop, TensorRT / ONNX Runtime /
    torch engines, one Parquet row per face."""


def _attach():
    # each command imports its heavy libraries only when it runs: `dfscan --help` stays quick
    from scanner.cli.bench import bench
    from scanner.cli.detect import detect
    from scanner.cli.explain import explain
    from scanner.cli.export import export
    from scanner.cli.info import detectors, engines, models
    from scanner.cli.report import report
    from scanner.cli.run import run
    from scanner.cli.train import evaluate, train

    for command in (run, export, models, engines, detectors, train, evaluate, bench, explain, detect, report):
        main.add_command(command)


_attach()
