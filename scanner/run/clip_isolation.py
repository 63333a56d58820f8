"""Video clips scanned in a supervised child process: a clip that crashes FFmpeg costs its own row.

Images are decoded in a child (``scanner.pipeline.isolation``); clips were decoded in the run's
own process, so one clip that segfaults FFmpeg (or DALI's decoder) stopped the run, and
``--resume`` met it again first thing. Here one long-lived child, forked by the same forkserver,
scans the clips it is sent one at a time with the very ``VideoScanner`` of the in-process path
and sends back each clip's faces table and ``videos.parquet`` row.

The child opens its own engine from the parent's ``EngineChoice`` (the file, backend and thread
count the parent loaded), as a Ray CPU worker opens the driver's choice: a clip goes
decode → detect → track → crop → infer chunk by chunk, so keeping inference in the parent would
mean a round trip per chunk and shared memory for frame-sized buffers, to save one engine's
memory on a CPU machine. The rows are those of ``local_clips``.

When the child dies (any signal) on a clip, the parent restarts it and sends that clip once
more; a clip that kills it twice gets one ``decoder_crashed`` row naming the signal, and the run
goes on with the next clip. Each clip is saved whole by ``scan_videos`` as it comes back, so
``--resume`` works per clip as before. Only on the CPU and without Ray, as for images: GPU runs
keep decoding in-process (the engine's CUDA context and NVDEC would have to be set up again in
the child on every restart), and Ray workers isolate crashes their own way (``worker_crashed``).
"""
from __future__ import annotations

import signal
import time
import traceback

from scanner.errors import DfscanError
from scanner.pipeline.isolation import ALONE_CRASHES, DecoderProcess, child_error, context, died_starting
from scanner.status import DECODER_CRASHED


def clip_child(cmd, data, choice, settings, detect, vs):
    """The clip process: opens the engine, then scans each clip it is sent until told to stop."""
    from scanner.run.videos import VideoScanner

    # the parent alone decides when to stop (see scanner.pipeline.isolation.child_main)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    scanner = None
    try:
        # the parent's log function is not picklable: its lines travel through the pipe
        scanner = VideoScanner(choice.load(), settings, detect, vs, log=lambda m: data.send(("log", m)))
        data.send(("ready", None))
        while (video := cmd.recv()) is not None:
            start = time.perf_counter()
            table, row = scanner.scan(video)
            row["seconds"] = round(time.perf_counter() - start, 3)
            data.send(("clip", (table, row)))
    except (EOFError, BrokenPipeError):
        return  # the parent has gone or closed the pipe
    except BaseException as exc:  # an error (not a crash): the parent raises it
        data.send(("error", (isinstance(exc, DfscanError), str(exc), traceback.format_exc())))
    finally:
        if scanner is not None:
            scanner.close()


class ClipSupervisor:
    """Sends clips to the child one at a time; restarts it when it dies."""

    def __init__(self, choice, config, settings, detect, vs, log=print):
        self.args, self.config, self.settings, self.log = (choice, settings, detect, vs), config, settings, log
        self.ctx = context()
        self.child: DecoderProcess | None = None

    def start(self):
        self.child = DecoderProcess(self.ctx, *self.args, target=clip_child, name="dfscan-clips")

    def scan(self, video):
        """``(faces table, videos.parquet row)`` of ``video``: its scan, or one decoder_crashed
        row when it killed the child ``ALONE_CRASHES`` times. Raises DfscanError when the child
        cannot start or reports a user error."""
        deaths = []
        while len(deaths) < ALONE_CRASHES:
            if self.child is None:
                if deaths:  # a crash need not come back (the OOM killer, a flaky codec): once more, alone
                    self.log(f"{video.file}: the clip process died of {deaths[-1]}; scanning the clip again "
                             "in a new one")
                self.start()
            self.child.send(video)
            while (msg := self.child.recv()) is not None:
                kind, arg = msg
                if kind == "log":
                    self.log(arg)
                elif kind == "clip":
                    return arg
                elif kind == "error":
                    raise child_error(arg, "the clip process")
            how, started = self.child.death(), self.child.ready
            self.child = None
            if not started:  # it died opening the engine: no clip is to blame
                raise died_starting("the clip scanning process", how, "--no-isolate scans clips in this process")
            deaths.append(how)
        return self.crashed(video, deaths[-1])

    def crashed(self, video, how: str):
        from scanner.output.videos import failed_clip

        why = f"the decoding process died of {how} each time it scanned this clip; the rest of the run went on"
        return failed_clip(video, DECODER_CRASHED, why, self.settings.threshold_for(self.config)[0])

    def close(self):
        if self.child is not None:
            self.child.stop()
            self.child = None


def isolated_clips(choice, config, settings, detect, vs, log=print):
    """``clip_scans(videos)`` as ``scanner.run.videos.local_clips`` gives, with each clip scanned
    in a supervised child that loads ``choice`` (an ``engines.autoselect.EngineChoice``);
    ``config`` is the loaded engine's, for the threshold of a crashed clip's row."""
    def clip_scans(videos):
        sup = ClipSupervisor(choice, config, settings, detect, vs, log)
        try:
            for video in videos:
                table, row = sup.scan(video)
                yield video, table, row
        finally:
            sup.close()

    return clip_scans
