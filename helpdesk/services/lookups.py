"""Settings that many writes in a row need, read once: per transaction, or per poll inside `shared()`."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from helpdesk.extensions import db

T = TypeVar("T")
_TRANSACTION = "helpdesk_lookups"
_SHARED = "helpdesk_shared_lookups"


def cached(name: str, load: Callable[[], T]) -> T:
    """Return the value of `load()`, read once per transaction (or once per `shared()` block)."""
    shared = db.session.info.get(_SHARED)
    if shared is None:
        shared = transaction_scratch()
    if name not in shared:
        shared[name] = load()
    return shared[name]


def forget(name: str) -> None:
    """Drop a cached value (its setting just changed in this transaction)."""
    for key in (_SHARED, _TRANSACTION):
        db.session.info.get(key, {}).pop(name, None)


def transaction_scratch() -> dict:
    """Return a dict that lives as long as the current transaction (begun if none is open)."""
    db.session.connection()
    transaction = db.session().get_transaction()
    scratch = db.session.info.get(_TRANSACTION)
    if scratch is None or scratch["transaction"] is not transaction:
        scratch = db.session.info[_TRANSACTION] = {"transaction": transaction}
    return scratch


@contextmanager
def shared() -> Iterator[None]:
    """Keep what `cached` reads for the whole block: a poll's mails, each in its own transaction.

    A settings change made meanwhile applies from the next block, as it does for a poll already.
    """
    session = db.session()
    outer = _SHARED in session.info
    if not outer:
        session.info[_SHARED] = {}
    try:
        yield
    finally:
        if not outer:
            session.info.pop(_SHARED, None)
