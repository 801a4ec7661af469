"""Fetch and parse a folder's new mail in forked helper processes, while the caller stores the mails before.

Parsing is pure Python and costs about as much as storing, so a thread would only take turns
with the caller; helper processes parse on the machine's other cores, and may also store a mail's
files (the caller's `upload`). Helpers only read the mailbox (EXAMINE and BODY.PEEK[]): what
becomes of each mail, and when it is marked done on the server, stays with the caller.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import queue
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain

from helpdesk.mail.imap import ImapError, ImapSession, ImapSettings
from helpdesk.mail.parse import ParsedMail, parse
from helpdesk.storage import StoredObject

WAIT = 5.0  # seconds between checks that the helper still lives
# How far a helper may get ahead of the caller: mails fetched and parsed, not yet taken. Counted
# in units of mail size, so a run of large mails holds the helper back sooner than small ones.
AHEAD_BYTES = 64 * 1024 * 1024
AHEAD_UNIT = 256 * 1024
UPLOAD_THREADS = 3  # per helper, for uploads while the caller waits for it or once its store is found slow
# A mail's uploads are slow when they take longer than this, plus the time their bytes take at
# SLOW_BYTES_PER_S; the store is slow when SLOW_OF of the last SLOW_OUT_OF mails' uploads were (one
# slow upload is as likely the busy machine's doing: a helper waits its turn for a core).
SLOW_UPLOAD = 0.020
SLOW_BYTES_PER_S = 50 * 1024 * 1024
SLOW_OF, SLOW_OUT_OF = 3, 5
FIRST_BATCH = 5  # mails in a helper's first FETCH
HELPER_NICENESS = 10
Upload = Callable[[ParsedMail, int], "list[StoredObject] | None"]


@dataclass
class FetchedMail:
    """One mail as fetched, and as parsed by the helper."""

    uid: int
    raw: bytes
    mail: ParsedMail
    stored: list[StoredObject] | None = None  # the mail's files, when the helper stored them


def available() -> bool:
    """Tell whether this platform can fork a helper (Linux can; the caller then works alone)."""
    return "fork" in multiprocessing.get_all_start_methods()


class Prefetcher:
    """Iterate over the FetchedMail of `uids` in UID order, fetched and parsed by helper processes.

    The UIDs go to the helpers in turn, each helper on its own IMAP connection fetching its share
    in batches; the caller takes the mails back in UID order.
    """

    def __init__(self, settings: ImapSettings, folder: str, uids: list[int], batch: int = 50,
                 helpers: int = 2, upload: Upload | None = None) -> None:
        """`upload`, run in the helpers, may store a parsed mail's files and return what it stored; it is
        told which of the caller's batches (of `batch` UIDs, in order) the mail belongs to."""
        # fork, not spawn: the helper needs no imports of its own (spawn would re-import Flask and
        # the app, over a second), and it touches nothing it inherits but the code it runs.
        context = multiprocessing.get_context("fork")
        self._uids = sorted(set(uids))
        count = max(1, min(helpers, len(self._uids)))
        self._queues = [context.Queue() for _ in range(count)]
        self._ahead = [context.Semaphore(AHEAD_BYTES // AHEAD_UNIT) for _ in range(count)]
        # The mails are dealt out one by one (1st to helper 1, 2nd to helper 2, ...), not batch by
        # batch: where a folder holds a run of heavy mails, every helper parses its share of them,
        # and none races ahead while the caller waits for the other.
        self._processes = [
            context.Process(target=_produce, name=f"helpdesk-prefetch-{n + 1}", daemon=True,
                            args=(settings, folder, self._uids[n::count],
                                  [index // batch for index in range(n, len(self._uids), count)], batch,
                                  self._queues[n], self._ahead[n], upload))
            for n in range(count)]
        # Objects the helpers inherit go to the permanent generation while they fork: a helper's
        # garbage collections then never walk (and copy-on-write) the whole parent heap.
        gc.freeze()
        try:
            for process in self._processes:
                process.start()
        finally:
            gc.unfreeze()

    def __iter__(self) -> Iterator[FetchedMail]:
        count = len(self._queues)
        for index in range(len(self._uids)):
            helper = index % count  # each helper answers for each of its UIDs: a mail or "gone"
            message = self._next(helper)
            kind = message[0]
            if kind == "mail":
                uid, raw, parsed, stored = message[1:]
                for _ in range(_units(raw)):
                    self._ahead[helper].release()
                yield FetchedMail(uid, raw, pickle.loads(parsed) if parsed is not None else parse(raw), stored)
            elif kind == "gone":
                continue  # expunged by another client meanwhile: nothing to take
            elif kind == "imap_error":
                raise ImapError(*message[1:])
            else:
                raise ImapError("connection", f"The mail fetching helper failed: {message[1]}")

    def _next(self, helper: int) -> tuple:
        while True:
            try:
                return self._queues[helper].get(timeout=WAIT)
            except queue.Empty:
                process = self._processes[helper]
                if not process.is_alive():
                    raise ImapError("connection", "The mail fetching helper stopped unexpectedly "
                                                  f"(exit code {process.exitcode}).") from None

    def close(self) -> list[list[StoredObject]]:
        """Stop the helpers, whether or not every mail was taken; return the files stored for mails not taken."""
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        leftovers = []
        for process, out in zip(self._processes, self._queues):
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
            # A helper stopped while writing leaves half a message in the pipe. With this process's
            # own copy of the pipe's writing end closed, reading that half ends in EOFError: no writer
            # is left to finish it, so the read below cannot wait forever.
            out._writer.close()
            while True:
                try:
                    message = out.get_nowait()
                except (queue.Empty, OSError, EOFError, pickle.UnpicklingError):
                    break
                if message[0] == "mail" and message[4]:
                    leftovers.append(message[4])
            out.close()
            out.join_thread()
        return leftovers

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # files stored for mails never taken stay orphaned: a few objects, only space


def _units(raw: bytes) -> int:
    """Return how much of a helper's AHEAD_BYTES a mail takes while it waits for the caller."""
    return min(1 + len(raw) // AHEAD_UNIT, AHEAD_BYTES // AHEAD_UNIT)


def _produce(settings: ImapSettings, folder: str, uids: list[int], batches: list[int], batch: int,
             out: multiprocessing.Queue, ahead: multiprocessing.Semaphore, upload: Upload | None) -> None:
    """A helper: fetch, parse (and maybe store the files of) each of its mails, hand them over in order,
    "gone" for a mail no longer there (or what failed)."""
    # Mails are handed over in order, each once its files are stored (see _Uploads).
    # The caller writing the rows is what the poll waits for, and the helpers keep ahead of it
    # with time to spare: where the cores are busy, the caller (and the database) go first.
    os.nice(HELPER_NICENESS)
    uploads = _Uploads(upload, ahead) if upload else None
    waiting: deque[tuple[int, bytes | None, bytes | None, Future | None]] = deque()

    def hand_over(all_of_them: bool) -> None:
        while waiting and (all_of_them or len(waiting) > UPLOAD_THREADS or waiting[0][3] is None
                           or waiting[0][3].done()):
            uid, raw, parsed, stored = waiting.popleft()
            if raw is None:
                out.put(("gone", uid))
                continue
            for _ in range(_units(raw)):
                ahead.acquire()  # released by the caller as it takes the mail
            out.put(("mail", uid, raw, parsed, _stored(stored)))

    try:
        with ImapSession(settings) as session:
            session.select(folder, readonly=True)
            # A small first FETCH: parsing starts as soon as a few mails are in, not fifty.
            first = min(FIRST_BATCH, batch)
            fetched = chain(session.fetch_uids(uids[:first], batch=first, missing=True),
                            session.fetch_uids(uids[first:], batch=batch, missing=True))
            batch_of = dict(zip(uids, batches))
            for uid, raw in fetched:
                parsed = stored = None
                if raw is not None:
                    try:
                        mail = parse(raw)
                        # Uploading here, not in the caller's threads, keeps them off its interpreter lock.
                        stored = uploads.submit(mail, batch_of[uid]) if uploads is not None else None
                        parsed = pickle.dumps(mail, protocol=pickle.HIGHEST_PROTOCOL)
                    except Exception:  # noqa: BLE001 - the caller parses this one itself; no mail goes missing
                        parsed = None
                waiting.append((uid, raw, parsed, stored))
                hand_over(all_of_them=False)
            hand_over(all_of_them=True)
    except ImapError as exc:
        hand_over(all_of_them=True)
        out.put(("imap_error", exc.kind, exc.diagnosis, exc.server_reply))
    except BaseException as exc:  # noqa: BLE001 - the caller must hear of any failure, not wait for it
        out.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if uploads is not None:
            uploads.shutdown()
        out.close()
        out.join_thread()  # everything put is in the pipe before the process ends


class _Uploads:
    """A helper's uploads: in its own thread while the caller has mails of this helper to take, else on threads.

    Handing a mail's upload to a thread costs the helper more CPU than the upload itself against a
    store nearby (waking the thread, taking turns at the interpreter lock). That is worth it only
    where the wait matters: while the caller waits for this helper's next mail, or once the store
    is found slow (SLOW_OF of the last SLOW_OUT_OF mails' uploads done here were), threads let the
    helper parse the next mails while uploads wait for the store.
    """

    def __init__(self, upload: Upload, ahead: multiprocessing.Semaphore) -> None:
        self._upload = upload
        self._ahead = ahead
        self._threads: ThreadPoolExecutor | None = None
        self._slow: deque[bool] = deque(maxlen=SLOW_OUT_OF)  # whether each of the last uploads here was slow

    def submit(self, mail: ParsedMail, batch: int) -> Future:
        """Store the mail's files, here or on a thread; the future holds what `upload` returned or raised."""
        # Once the store is slow, no upload is done here again: the verdict stands for the poll.
        if sum(self._slow) >= SLOW_OF or not self._caller_busy():
            if self._threads is None:
                self._threads = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="prefetch-upload")
            return self._threads.submit(self._upload, mail, batch)
        future: Future = Future()
        started = time.monotonic()
        try:
            future.set_result(self._upload(mail, batch))
        except Exception as exc:  # noqa: BLE001 - kept for the caller, as a thread's future would keep it
            future.set_exception(exc)
        if future.exception() is None and future.result() is None:
            return future  # nothing went to the store: nothing to learn about it
        allowed = SLOW_UPLOAD + sum(part.size for part in mail.attachments) / SLOW_BYTES_PER_S
        self._slow.append(time.monotonic() - started > allowed)
        return future

    def _caller_busy(self) -> bool:
        """Tell whether mails this helper handed over wait for the caller (at least two units of AHEAD_BYTES)."""
        try:
            return AHEAD_BYTES // AHEAD_UNIT - self._ahead.get_value() >= 2
        except NotImplementedError:  # macOS cannot count a semaphore: threads, as everywhere before
            return False

    def shutdown(self) -> None:
        """Let the threads end once their uploads are done, without waiting for them."""
        if self._threads is not None:
            self._threads.shutdown(wait=False)


def _stored(future: Future | None) -> list[StoredObject] | None:
    """Return what an upload stored; None when it stored nothing or failed (the caller then stores)."""
    if future is None:
        return None
    try:
        return future.result()
    except Exception:  # noqa: BLE001 - the caller stores the files itself and reports what fails
        return None
