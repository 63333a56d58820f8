"""dfscan scanner: catalog → DALI pipeline → run loop → Parquet writers and metrics → CLI."""
import threading

import tqdm as _tqdm

from scanner.errors import DfscanError

__all__ = ["DfscanError"]

# Progress bars are drawn by one process (the decoding child draws none), so tqdm needs no
# lock across processes. Its default one is a POSIX named semaphore, and acquiring it aborted
# the whole test process twice (glibc's futex check) after OpenVINO, DALI and forked DataLoader
# workers had come and gone in it; a thread lock cannot fail that way. The monitor thread only
# retunes bars updated too fast; ours update once per batch.
_tqdm.tqdm.set_lock(threading.RLock())
_tqdm.tqdm.monitor_interval = 0
