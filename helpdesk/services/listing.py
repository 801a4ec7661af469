"""Long lists read one page of rows whatever the table's size: newest first, "load older" cursors, capped totals."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import re

from sqlalchemy import Select, func, or_, select, tuple_

from helpdesk import search
from helpdesk.extensions import db

# Counting stops here: past it a list says "more than 10,000" instead of reading a million rows.
COUNT_CAP = 10_000
_CURSOR_TIME = "%Y%m%dT%H%M%S.%f"
_WHOLE_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")


@dataclass
class KeysetPage:
    items: list[Any]
    next_cursor: str | None  # the `before` value of the next (older) page
    total: int | None  # None when not counted (a "load older" request)

    @property
    def total_label(self) -> str:
        if self.total is None:
            return ""
        if self.total > COUNT_CAP:
            return f"more than {COUNT_CAP:,}"
        return f"{self.total:,}"


def cursor_of(created_at: datetime, row_id: int) -> str:
    """Return the cursor that continues a list after this row."""
    return f"{created_at.strftime(_CURSOR_TIME)}_{row_id}"


def parse_cursor(value: str | None) -> tuple[datetime, int] | None:
    """Read a cursor from a URL; a malformed one means the first page."""
    if not value:
        return None
    stamp, _, row_id = value.partition("_")
    try:
        return datetime.strptime(stamp, _CURSOR_TIME), int(row_id)
    except ValueError:
        return None


def newest_first(query: Select, model, *, before: str | None = None, per_page: int = 25,
                 count: bool = True) -> KeysetPage:
    """Return the page of `query`'s rows older than the cursor `before`, newest first.

    The order (created_at, id) is total, so a page never repeats or skips a row however many
    rows arrive between two requests; each filtered order has its index (migration 0005).
    """
    total = capped_count(query, model) if count else None
    keyed = query.order_by(model.created_at.desc(), model.id.desc())
    position = parse_cursor(before)
    if position is not None:
        keyed = keyed.where(tuple_(model.created_at, model.id) < tuple_(*position))
    rows = db.session.scalars(keyed.limit(per_page + 1)).all()
    next_cursor = cursor_of(rows[per_page - 1].created_at, rows[per_page - 1].id) if len(rows) > per_page else None
    return KeysetPage(rows[:per_page], next_cursor, total)


def capped_count(query: Select, model) -> int:
    """Count `query`'s rows, reading at most COUNT_CAP + 1 of them."""
    bounded = query.order_by(None).with_only_columns(model.id).limit(COUNT_CAP + 1)
    return db.session.scalar(select(func.count()).select_from(bounded.subquery())) or 0


def alphabetical(query: Select, name_column, id_column, *, after: str | None = None, per_page: int = 25,
                 count: bool = True) -> KeysetPage:
    """Return the page of `query`'s rows after the cursor `after`, by name (then id)."""
    total = capped_count(query, id_column.class_) if count else None
    keyed = query.order_by(name_column, id_column)
    name, _, row_id = (after or "").rpartition("\x1f")
    if row_id.isdigit():
        keyed = keyed.where(tuple_(name_column, id_column) > tuple_(name, int(row_id)))
    rows = db.session.scalars(keyed.limit(per_page + 1)).all()
    last = rows[per_page - 1] if len(rows) > per_page else None
    next_cursor = f"{getattr(last, name_column.key)}\x1f{last.id}" if last is not None else None
    return KeysetPage(rows[:per_page], next_cursor, total)


def searched_log(query: Select, model, log: int, words: str, *, address, message_id,
                 before: str | None = None, per_page: int = 50) -> KeysetPage:
    """Return a page of log rows whose subject, addresses or Message-ID hold `words`, newest first.

    One whole address or Message-ID is looked up in the B-tree indexes of `address` and
    `message_id`. Other words go to the full-text index, which names the newest matches older
    than the cursor; the filters then apply to those few rows only (a page can come out
    shorter than `per_page`, "load older" goes on).
    """
    term = words.strip()
    if _WHOLE_ADDRESS.fullmatch(term):
        bare = term.strip("<>")
        exact = query.where(or_(address == bare.lower(), message_id.in_((bare, f"<{bare}>"))))
        return newest_first(exact, model, before=before, per_page=per_page, count=False)
    position = parse_cursor(before)
    ids = search.log_matches(words, log, before_id=position[1] if position else None, limit=per_page * 4)
    rows = db.session.scalars(query.where(model.id.in_(ids or [-1]))
                              .order_by(model.created_at.desc(), model.id.desc())).all()
    if ids and len(ids) == per_page * 4:
        oldest = db.session.get(model, ids[-1])
        rows = [r for r in rows if (r.created_at, r.id) >= (oldest.created_at, oldest.id)]
        return KeysetPage(rows, cursor_of(oldest.created_at, oldest.id), None)
    return KeysetPage(rows, None, None)
