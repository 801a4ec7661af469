"""Fetch and parse a folder's new mail in a forked helper process, while the caller stores the mails before.

Parsing is the larger half of the work per mail and pure Python, so a thread would only take
turns with the caller; a second process parses on the machine's other core. The helper only
reads (EXAMINE and BODY.PEEK[]): what the caller does with each mail, and when it marks mail
done on the server, stays with the caller.
"""
from __future__ import annotations

import logging
import multiprocessing
import pickle
import queue
from collections.abc import Iterator
from dataclasses import dataclass

from helpdesk.mail.imap import ImapError, ImapSession, ImapSettings
from helpdesk.mail.parse import ParsedMail, parse

log = logging.getLogger(__name__)

DEPTH = 32  # mails parsed ahead at most: bounds the memory the helper holds
WAIT = 5.0  # seconds between checks that the helper still lives


@dataclass
class FetchedMail:
    """One mail as fetched, and as parsed by the helper."""

    uid: int
    raw: bytes
    mail: ParsedMail


def available() -> bool:
    """Tell whether this platform can fork a helper (Linux can; the caller then works alone)."""
    return "fork" in multiprocessing.get_all_start_methods()


class Prefetcher:
    """Iterate over (uid, raw, parsed) for `uids` in UID order, fetched and parsed by a helper process."""

    def __init__(self, settings: ImapSettings, folder: str, uids: list[int], batch: int = 50) -> None:
        # fork, not spawn: the helper needs no imports of its own (spawn would re-import Flask and
        # the app, over a second), and it touches nothing it inherits but the code it runs.
        context = multiprocessing.get_context("fork")
        self._queue = context.Queue(maxsize=DEPTH)
        self._process = context.Process(target=_produce, args=(settings, folder, list(uids), batch, self._queue),
                                        name="helpdesk-prefetch", daemon=True)
        self._process.start()

    def __iter__(self) -> Iterator[FetchedMail]:
        while True:
            message = self._next()
            kind = message[0]
            if kind == "mail":
                uid, raw, parsed = message[1:]
                yield FetchedMail(uid, raw, pickle.loads(parsed) if parsed is not None else parse(raw))
            elif kind == "done":
                return
            elif kind == "imap_error":
                raise ImapError(*message[1:])
            else:
                raise ImapError("connection", f"The mail fetching helper failed: {message[1]}")

    def _next(self) -> tuple:
        while True:
            try:
                return self._queue.get(timeout=WAIT)
            except queue.Empty:
                if not self._process.is_alive():
                    raise ImapError("connection", "The mail fetching helper stopped unexpectedly "
                                                  f"(exit code {self._process.exitcode}).") from None

    def close(self) -> None:
        """Stop the helper, whether or not every mail was taken."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(10)
        self._queue.close()
        self._queue.join_thread()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _produce(settings: ImapSettings, folder: str, uids: list[int], batch: int, out: multiprocessing.Queue) -> None:
    """The helper: fetch and parse each mail, hand it over, then say "done" (or what failed)."""
    try:
        with ImapSession(settings) as session:
            session.select(folder, readonly=True)
            for uid, raw in session.fetch_uids(uids, batch=batch):
                try:
                    parsed = pickle.dumps(parse(raw), protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # noqa: BLE001 - the caller parses this one itself; no mail goes missing
                    parsed = None
                out.put(("mail", uid, raw, parsed))
        out.put(("done",))
    except ImapError as exc:
        out.put(("imap_error", exc.kind, exc.diagnosis, exc.server_reply))
    except BaseException as exc:  # noqa: BLE001 - the caller must hear of any failure, not wait for it
        out.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        out.close()
        out.join_thread()  # everything put is in the pipe before the process ends
