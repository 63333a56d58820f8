"""Decoding in a supervised child process: an image that crashes the decoder costs its own faces.

``isolate_failures`` handles the errors DALI raises; a decoder that dies (a segfault in a codec,
an abort, the OOM killer) takes its process with it. So on the CPU a single-machine run reads,
checks, decodes and crops in a child process, with the very ``plan_batches`` and ``Cropper`` of
the in-process path (same batches, same crops, same rows), and the parent never opens an image
file. The child writes each batch's crops into one of two slots of shared memory and sends the
small rest (face ids, failed faces, the slot) through a pipe; the parent hands the slot back once
the engine is done with it, so the child decodes one batch ahead, as the in-process producer
thread does. Shared memory, because a 64-face batch at 224 px is 38 MB: through a pipe it cost
60-170 ms per batch on the 2-core test machine, here it costs nothing beyond the copy of DALI's
output that the in-process path makes too.

When the child dies, the batches it had sent still count. The parent restarts it and bisects the
images the child had read since its last batch (a shared counter says how far it got) until the
culprit is alone; an image that kills the child twice when alone gets ``decoder_crashed`` and the
run goes on. Children are forked by a forkserver that has DALI imported already: 'fork' from the
parent would copy a process with live threads (the engine's, DALI's), and 'spawn' pays the 2-s
DALI import again on every restart of a bisection.

Only on the CPU: on the GPU the crops are CUDA tensors, which could leave their process only
through CUDA IPC handles, with the producer keeping every tensor alive until the consumer is
done; GPU runs keep the in-process path, and Ray workers isolate crashes their own way.
"""
from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import signal
import traceback
from collections import deque
from typing import Iterator

import numpy as np

from scanner.catalog import Catalog
from scanner.errors import DfscanError
from scanner.pipeline.batching import ImageJob, PlannedBatch, plan_batches
from scanner.pipeline.cropper import CroppedBatch, Cropper
from scanner.settings import RunSettings
from scanner.status import DECODER_CRASHED, FaceResult

N_SLOTS = 2  # one batch with the engine, one being filled: the child works one batch ahead
ALONE_CRASHES = 2  # an image is a culprit once it killed the child this often when scanned alone
# imported once in the forkserver, so that every (re)started child is forked with DALI loaded
PRELOAD = ["numpy", "nvidia.dali.fn", "nvidia.dali.pipeline", "nvidia.dali.types", __name__]
EMPTY = np.zeros(0, dtype=np.uint8)


def context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # takes effect when the server starts (once per process)
    return ctx


def start_forkserver():
    """Start the forkserver now, without waiting for it: it imports DALI (~0.5 s on the 2-core
    test machine), which then overlaps the run's catalog and engine set-up instead of delaying
    the first batch. ``Process.start`` waits for it as it would otherwise."""
    from multiprocessing import forkserver

    context()
    forkserver.ensure_running()


def slot_shape(config, settings: RunSettings) -> tuple[int, ...]:
    return (N_SLOTS, settings.batch_size, 3, *config.input_size)


# ---- the child -------------------------------------------------------------------------------

def child_main(cmd, data, catalog: Catalog, config, settings: RunSettings, shared, progress):
    """The decoding process: scans the lists of image ids it is sent, batch by batch."""
    # A terminal's Ctrl-C (and a scheduler's SIGTERM to the whole group) reaches this process
    # too; the parent alone decides when to stop, so that a stop is never taken for a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    slots = np.frombuffer(shared, dtype=np.float32).reshape(slot_shape(config, settings))
    free = deque(range(N_SLOTS))
    try:
        cropper = Cropper(config, settings)
        cropper.prepare()  # a child started ahead of the scan (``early_decoder``) is ready for it
        data.send(("ready", None))
        while (msg := cmd.recv()) is not None:
            kind, arg = msg
            if kind == "free":
                free.append(arg)
                continue
            for planned in plan_batches(catalog, settings.batch_size, config.crop_margin,
                                        settings.max_pixels, announce(arg, progress)):
                pieces, failed = cropper.crop(planned.jobs) if planned.jobs else ([], [])
                slot, sizes = None, [(face_ids, len(crops)) for face_ids, crops in pieces]
                if pieces:
                    while not free:  # the engine still reads both slots
                        freed = cmd.recv()
                        if freed is None:
                            return
                        free.append(freed[1])
                    slot, at = free.popleft(), 0
                    for _, crops in pieces:
                        slots[slot, at:at + len(crops)] = crops
                        at += len(crops)
                data.send(("batch", (strip(planned), sizes, failed, slot)))
            data.send(("done", None))
    except (EOFError, BrokenPipeError):
        return  # the parent has gone or closed the pipe: nothing left to do
    except BaseException as exc:  # an error (not a crash): the parent raises it
        data.send(("error", (isinstance(exc, DfscanError), str(exc), traceback.format_exc())))


def announce(image_ids, progress):
    """The ids, each announced in shared memory before it is read, so that after a crash the
    parent knows how far the child got without a message per image."""
    for n, image_id in enumerate(image_ids):
        progress.value = n
        yield image_id


def strip(planned: PlannedBatch) -> PlannedBatch:
    """The batch without its encoded files: the parent needs only ids and boxes."""
    jobs = [ImageJob(j.image_id, EMPTY, j.face_ids, j.rois) for j in planned.jobs]
    return PlannedBatch(jobs=jobs, failed=planned.failed, n_slots=planned.n_slots)


# ---- the parent ------------------------------------------------------------------------------

def child_error(arg, what: str) -> Exception:
    """What to raise for an error a child reported (not a crash): a user error as it was said,
    anything else as a failure with the child's traceback."""
    is_user_error, text, tb = arg
    return DfscanError(text) if is_user_error else RuntimeError(f"{what} failed:\n{tb}")


def died_starting(what: str, how: str, fix: str) -> DfscanError:
    """The error for a child that died before it read anything: no input is to blame."""
    return DfscanError(f"{what} died of {how} while starting (a script that calls dfscan must keep its own "
                       f"code under `if __name__ == '__main__':`, as for any multiprocessing); {fix}")


class DecoderProcess:
    """One child process with its two pipes; ``recv`` returns None once it has died. ``target``
    is called as ``target(cmd, data, *args)`` (``scanner.run.clip_isolation`` runs clips so)."""

    def __init__(self, ctx, *args, target=child_main, name="dfscan-decoder"):
        cmd_r, self.cmd = ctx.Pipe(duplex=False)
        self.data, data_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=target, name=name, daemon=True, args=(cmd_r, data_w, *args))
        self.proc.start()
        cmd_r.close()  # the child holds the only other ends: its death reads as end of file
        data_w.close()
        self.ready = False

    def send(self, msg):
        try:
            self.cmd.send(msg)
        except OSError:  # it has died (BrokenPipeError); the next recv says so
            pass

    def recv(self):
        try:
            msg = self.data.recv()
        except (EOFError, OSError):  # OSError: it died in the middle of a message
            return None
        self.ready = self.ready or msg[0] == "ready"
        return msg

    def death(self) -> str:
        """How the child ended: 'SIGKILL', 'SIGSEGV', 'exit status 3'."""
        self.proc.join(timeout=30)
        code = self.proc.exitcode
        if code is None:
            self.stop()
            return "a broken pipe"
        if code < 0:
            try:
                return signal.Signals(-code).name
            except ValueError:
                return f"signal {-code}"
        return f"exit status {code}"

    def stop(self):
        """Ends the child now, whatever it is doing: it holds nothing worth waiting for."""
        for conn in (self.cmd, self.data):
            conn.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()


class Delivered:
    """The faces the consumer has had: a flag per catalog position (a set of ids would hold a
    Python int per face for the whole run)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.flags = np.zeros(len(catalog.faces), dtype=bool)
        self.count = 0

    def has(self, face_ids) -> np.ndarray:
        pos = self.catalog.face_positions(np.asarray(face_ids, dtype=np.int64))
        return (pos >= 0) & self.flags[np.maximum(pos, 0)] if len(self.flags) else np.zeros(len(pos), dtype=bool)

    def __contains__(self, face_id) -> bool:
        return bool(self.has([face_id])[0])

    def update(self, face_ids):
        pos = self.catalog.face_positions(np.fromiter(face_ids, dtype=np.int64))
        pos = np.unique(pos[pos >= 0])
        self.count += int((~self.flags[pos]).sum())
        self.flags[pos] = True

    def __bool__(self) -> bool:
        return self.count > 0

    def __iter__(self):
        """The delivered face ids, in catalog order."""
        return iter(self.catalog.face_cols.ids[self.flags].tolist())

    def __len__(self) -> int:
        return self.count


class Supervisor:
    """Feeds lists of image ids to the child, restarts it when it dies, and bisects."""

    def __init__(self, catalog: Catalog, config, settings: RunSettings):
        self.catalog, self.config, self.settings = catalog, config, settings
        self.ctx = context()
        self.shared = self.ctx.RawArray(ctypes.c_float, int(np.prod(slot_shape(config, settings))))
        self.slots = np.frombuffer(self.shared, dtype=np.float32).reshape(slot_shape(config, settings))
        self.progress = self.ctx.RawValue(ctypes.c_longlong, -1)
        self.delivered = Delivered(catalog)  # faces sent to the consumer
        self.child: DecoderProcess | None = None

    def image_done(self, image_id) -> bool:
        return bool(self.delivered.has(self.catalog.face_ids_of(image_id)).all())

    def start(self, pending: list[int] | None = None):
        # the child needs only the images still to do; a restart sends less each time (the first
        # start of a fresh run sends the catalog as it is: a subset would be a second copy of it)
        whole = pending is None or len(pending) == len(self.catalog.images)
        self.child = DecoderProcess(self.ctx, self.catalog if whole else self.catalog.subset(pending), self.config,
                                    self.settings, self.shared, self.progress)

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """Wait until the child's first message (``ready``, once its DALI pipeline is built; or
        its error) can be read, without reading it. False when it has not come in ``timeout``."""
        if self.child is None:
            self.start()
        try:
            return self.child.data.poll(timeout)
        except OSError:  # its pipe is closed: it died, which the scan reports
            return False

    def scan_list(self, ids: list[int], pending: list[int]) -> Iterator[CroppedBatch | str]:
        """Batches of ``ids`` from the child; ends with the child's death (a str) if it died."""
        if self.child is None:
            self.start(pending)
        self.progress.value = -1
        self.child.send(("scan", ids))
        while (msg := self.child.recv()) is not None:
            kind, arg = msg
            if kind == "done":
                return
            if kind == "error":
                raise child_error(arg, "the decoding process")
            if kind == "batch":
                planned, sizes, failed, slot = arg
                yield self.unseen(planned, sizes, failed, slot)
                if slot is not None:  # the consumer is done with the slot's crops
                    self.child.send(("free", slot))
        how, started = self.child.death(), self.child.ready
        self.child = None
        if not started:  # nothing was read: no image is to blame
            raise died_starting("the decoding process", how, "--no-isolate decodes in this process")
        yield how

    def unseen(self, planned, sizes, failed, slot) -> CroppedBatch:
        """The batch as the consumer sees it, without faces it was given before (a re-run image
        with more faces than a batch, part of which came before the crash)."""
        pieces, at = [], 0
        for face_ids, n in sizes:
            crops = self.slots[slot, at:at + n]
            at += n
            keep = np.flatnonzero(~self.delivered.has(face_ids)).tolist()
            if len(keep) < len(face_ids):
                face_ids, crops = [face_ids[k] for k in keep], crops[keep]
            if face_ids:
                pieces.append((face_ids, crops))
        planned.failed, failed = self.not_delivered(planned.failed), self.not_delivered(failed)
        for job in planned.jobs:
            pairs = [(f, r) for f, r in zip(job.face_ids, job.rois) if f not in self.delivered]
            job.face_ids, job.rois = [f for f, _ in pairs], [r for _, r in pairs]
        self.delivered.update(f for ids, _ in pieces for f in ids)
        self.delivered.update(r.face_id for r in planned.failed + failed)
        return CroppedBatch(planned, pieces, failed)

    def not_delivered(self, results: list[FaceResult]) -> list[FaceResult]:
        if not results:
            return results
        seen = self.delivered.has([r.face_id for r in results])
        return [r for r, s in zip(results, seen.tolist()) if not s]

    def crashed(self, image_id, how: str) -> CroppedBatch:
        why = (f"the decoding process died of {how} each time it read this image; "
               "the rest of the run went on")
        ids = self.catalog.face_ids_of(image_id)
        faces = ids[~self.delivered.has(ids)].tolist()
        self.delivered.update(faces)
        return CroppedBatch(PlannedBatch(failed=[FaceResult(f, DECODER_CRASHED, why) for f in faces]), [], [])

    def close(self):
        if self.child is not None:
            self.child.stop()
            self.child = None


def early_decoder(catalog: Catalog, config, settings: RunSettings) -> Supervisor:
    """A supervisor whose child is started now, with the whole catalog, and builds its DALI
    pipeline while the caller opens the engine: the child's start and first build took 1.0 s
    before its first batch on the 2-core test machine. ``isolated_crops`` takes it when its
    config and settings are the scan's own; the caller closes it otherwise."""
    sup = Supervisor(catalog, config, settings)
    sup.start()
    return sup


def _decodes_alike(a: RunSettings, b: RunSettings) -> bool:
    """Equal but for the decision threshold: a run resolves it from the engine's config after its
    early child started (a copy, where the batch was fitted), and decoding never reads it."""
    unset = {"threshold": None, "threshold_origin": None}
    return dataclasses.replace(a, **unset) == dataclasses.replace(b, **unset)


def isolated_crops(catalog: Catalog, config, settings: RunSettings, image_ids=None,
                   supervisor: Supervisor | None = None) -> Iterator[CroppedBatch]:
    """``iter_crops`` with the decoding in a child process; an image that kills it every time
    gets ``decoder_crashed``. A batch's crops live in shared memory and are valid only until the
    next batch is asked for. ``supervisor``: one from ``early_decoder`` for this catalog, used
    when it decodes as this scan would (closed here in any case). Raises DfscanError when the
    child cannot even start."""
    ids = catalog.images_with_faces(image_ids)
    sup = supervisor
    if sup is None or sup.catalog is not catalog or sup.config != config or not _decodes_alike(sup.settings, settings):
        if sup is not None:
            sup.close()
        sup = Supervisor(catalog, config, settings)
    todo = deque([(ids, 0)] if ids else [])  # (image ids, crashes of this list when alone)
    idle_deaths = 0
    try:
        while todo:
            part, alone = todo.popleft()
            if sup.delivered:  # (a first pass over millions of images has nothing to skip)
                part = [i for i in part if not sup.image_done(i)]
            if not part:
                continue
            pending = part + [i for rest, _ in todo for i in rest]
            for item in sup.scan_list(part, pending):
                if isinstance(item, CroppedBatch):
                    yield item
                    continue
                read = part[:sup.progress.value + 1]
                suspects = [i for i in read if not sup.image_done(i)]
                rest = part[len(read):]
                if not suspects:  # it died between images: retry, unless it never gets going
                    idle_deaths += 1
                    if idle_deaths > ALONE_CRASHES:
                        raise DfscanError(f"the decoding process keeps dying of {item} between images; "
                                          "--no-isolate decodes in this process")
                    todo.appendleft((part, alone))
                    continue
                idle_deaths = 0
                if suspects == part and len(part) == 1:
                    if alone + 1 >= ALONE_CRASHES:
                        yield sup.crashed(part[0], item)
                    else:
                        todo.appendleft((part, alone + 1))
                    continue
                if rest:
                    todo.appendleft((rest, 0))
                half = max(1, len(suspects) // 2)
                for piece in (suspects[half:], suspects[:half]):
                    if piece:
                        todo.appendleft((piece, 0))
    finally:
        sup.close()
