"""Full-text search of tickets and of the mail logs: SQLite FTS5, or PostgreSQL's tsvector with GIN.

Both databases hold the same documents, written by triggers (migration 0005), so every
write path keeps them in step inside its own transaction:

- `ticket_search`: one document per ticket (title, description), comment (body; `internal` for
  notes), attachment (file name) and contact (name, address). Its key is `id * 8 + kind`.
  A contact's document finds every ticket of that contact.
- `mail_log_search`: one document per inbound log row (subject; sender and Message-ID) and
  outbound mail (subject; recipients and Message-ID). Its key is `id * 2 + log`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from markupsafe import Markup, escape
from sqlalchemy import text

from helpdesk.extensions import db

KIND_TICKET, KIND_COMMENT, KIND_ATTACHMENT, KIND_CONTACT = 0, 1, 2, 3
LOG_INBOUND, LOG_OUTBOUND = 0, 1
LANGUAGE = "english"  # PostgreSQL's stemming of ticket text; the logs use 'simple'
SEARCH_TABLES = ("ticket_search", "mail_log_search")
# A search ranks at most the newest this many matching documents: a word found in a hundred
# thousand comments costs no more than one found in a thousand.
MAX_DOCUMENTS = 1000
_START, _STOP = "\x02", "\x03"
_WORD = re.compile(r"\w+")
_MASKS = "\ue000\ue001\ue002"
_UNMASK = str.maketrans(_MASKS, "<>&")


def is_search_table(name: str) -> bool:
    """Tell the search tables (and SQLite's shadow tables of them) from the models' tables."""
    return name.startswith(SEARCH_TABLES)


def words(query: str) -> list[str]:
    """Return the words a query looks for (punctuation only separates them)."""
    return _WORD.findall(query.lower())[:12]


def _dialect() -> str:
    return db.session.get_bind().dialect.name


def match_expression(query: str) -> str | None:
    """Return the query in the engine's own syntax: every word, whole (stemmed the same way as the text).

    No prefix matching: SQLite merges a prefix's terms again for every row it highlights.
    """
    found = words(query)
    if not found:
        return None
    if _dialect() == "postgresql":
        return " & ".join(found)
    return " ".join(f'"{w}"' for w in found)


@dataclass
class TicketHit:
    ticket_id: int
    kind: str  # title | description | comment | internal note | attachment | contact
    snippet: Markup


@dataclass
class TicketResults:
    hits: list[TicketHit]
    total: int  # matching tickets among the best MAX_DOCUMENTS documents
    capped: bool  # more documents matched than were ranked
    page: int
    per_page: int

    @property
    def has_next(self) -> bool:
        return self.page * self.per_page < self.total


def search_tickets(query: str, *, statuses: tuple[str, ...] = (), customer_id: int | None = None,
                   mailbox_id: int | None = None, page: int = 1, per_page: int = 25) -> TicketResults:
    """Return a page of tickets whose text, thread, files or contact match `query`, best first."""
    expression = match_expression(query)
    if expression is None:
        return TicketResults([], 0, False, page, per_page)
    postgres = _dialect() == "postgresql"
    filters, params = [], {"q": expression, "cap": MAX_DOCUMENTS + 1}
    if statuses:
        filters.append("t.status IN (" + ", ".join(f":s{i}" for i in range(len(statuses))) + ")")
        params.update({f"s{i}": s for i, s in enumerate(statuses)})
    if customer_id is not None:
        filters.append("t.customer_id = :customer")
        params["customer"] = customer_id
    if mailbox_id is not None:
        filters.append("t.mailbox_id = :mailbox")
        params["mailbox"] = mailbox_id
    where = ("WHERE " + " AND ".join(filters)) if filters else ""
    # The newest matching documents first (the key grows with the id), then their rank.
    if postgres:
        matched = (f"SELECT doc, ticket_id, contact_id, -ts_rank_cd(document, q) AS score "
                   f"FROM ticket_search, to_tsquery('{LANGUAGE}', :q) AS q WHERE document @@ q "
                   "ORDER BY doc DESC LIMIT :cap")
    else:
        matched = ("SELECT rowid AS doc, ticket_id, contact_id, bm25(ticket_search, 4.0, 1.0) AS score "
                   "FROM ticket_search WHERE ticket_search MATCH :q ORDER BY rowid DESC LIMIT :cap")
    best = ("SELECT DISTINCT ON (tid) tid, doc, score FROM hits ORDER BY tid, score, doc" if postgres
            else "SELECT tid, doc, min(score) AS score FROM hits GROUP BY tid")
    sql = f"""
        WITH m AS ({matched}),
        hits AS (SELECT ticket_id AS tid, doc, score FROM m WHERE ticket_id IS NOT NULL
                 UNION ALL
                 SELECT t.id, m.doc, m.score FROM m JOIN tickets t ON t.contact_id = m.contact_id
                 WHERE m.ticket_id IS NULL),
        best AS ({best})
        SELECT t.id, best.doc, count(*) OVER () AS total,
               (SELECT count(*) FROM m) AS documents
        FROM best JOIN tickets t ON t.id = best.tid {where}
        ORDER BY best.score, t.id DESC LIMIT :limit OFFSET :offset"""
    params.update(limit=per_page, offset=(page - 1) * per_page)
    rows = db.session.execute(text(sql), params).all()
    if not rows:
        return TicketResults([], 0, False, page, per_page)
    snippets = _snippets([row.doc for row in rows], expression, postgres)
    hits = [TicketHit(row.id, *snippets.get(row.doc, ("", Markup("")))) for row in rows]
    return TicketResults(hits, rows[0].total, rows[0].documents > MAX_DOCUMENTS, page, per_page)


def _snippets(docs: list[int], expression: str, postgres: bool) -> dict[int, tuple[str, Markup]]:
    """Return each document's kind and highlighted excerpt, for one page of results."""
    params = {"q": expression, **{f"d{i}": doc for i, doc in enumerate(docs)}}
    listed = ", ".join(f":d{i}" for i in range(len(docs)))
    if postgres:
        params["options"] = f"StartSel={_START}, StopSel={_STOP}, MaxWords=30, MinWords=12, MaxFragments=2"
        params["masks"] = _MASKS
        # The headline drops what looks like markup ("<today>"): those characters go in masked, come back after.
        sql = (f"SELECT doc, internal, title <> '' AND to_tsvector('{LANGUAGE}', title) @@ q AS in_title, "
               f"ts_headline('{LANGUAGE}', translate(CASE WHEN title <> '' AND to_tsvector('{LANGUAGE}', title) @@ q "
               "THEN title ELSE body END, '<>&', :masks), q, :options) AS excerpt "
               f"FROM ticket_search, to_tsquery('{LANGUAGE}', :q) AS q WHERE doc IN ({listed})")
    else:
        sql = ("SELECT rowid AS doc, internal, "
               f"instr(highlight(ticket_search, 0, '{_START}', '{_STOP}'), '{_START}') > 0 AS in_title, "
               f"CASE WHEN instr(highlight(ticket_search, 0, '{_START}', '{_STOP}'), '{_START}') > 0 "
               f"THEN highlight(ticket_search, 0, '{_START}', '{_STOP}') "
               f"ELSE snippet(ticket_search, 1, '{_START}', '{_STOP}', '…', 24) END AS excerpt "
               f"FROM ticket_search WHERE ticket_search MATCH :q AND rowid IN ({listed})")
    found = {}
    for row in db.session.execute(text(sql), params):
        found[row.doc] = (_kind(row.doc, bool(row.internal), bool(row.in_title)), highlighted(row.excerpt or ""))
    return found


def _kind(doc: int, internal: bool, in_title: bool) -> str:
    kind = doc % 8
    if kind == KIND_TICKET:
        return "title" if in_title else "description"
    if kind == KIND_COMMENT:
        return "internal note" if internal else "comment"
    if kind == KIND_ATTACHMENT:
        return "attachment"
    return "contact"


def highlighted(excerpt: str) -> Markup:
    """Escape an excerpt and turn the engine's match markers into <mark> elements."""
    escaped = str(escape(excerpt.replace("\n", " ").translate(_UNMASK)))
    return Markup(escaped.replace(_START, "<mark>").replace(_STOP, "</mark>"))


def log_matches(query: str, log: int, *, before_id: int | None = None, limit: int = 50) -> list[int] | None:
    """Return the ids of log rows (newest first) whose subject, addresses or Message-ID hold every word."""
    expression = match_expression(query)
    if expression is None:
        return None
    params = {"q": expression, "log": log, "limit": limit,
              "before": (before_id * 2 + log) if before_id is not None else 2 ** 62}
    if _dialect() == "postgresql":
        sql = ("SELECT doc FROM mail_log_search WHERE document @@ to_tsquery('simple', :q) "
               "AND doc % 2 = :log AND doc < :before ORDER BY doc DESC LIMIT :limit")
    else:
        sql = ("SELECT rowid AS doc FROM mail_log_search WHERE mail_log_search MATCH :q "
               "AND rowid % 2 = :log AND rowid < :before ORDER BY rowid DESC LIMIT :limit")
    return [doc // 2 for doc in db.session.scalars(text(sql), params)]


def fill_statements(dialect: str) -> list[str]:
    """Return the statements that write every search document from the tables (after emptying them)."""
    if dialect == "postgresql":
        return [
            "DELETE FROM ticket_search",
            f"INSERT INTO ticket_search (doc, title, body, ticket_id) "
            f"SELECT id * 8 + {KIND_TICKET}, title, description, id FROM tickets",
            f"INSERT INTO ticket_search (doc, body, ticket_id, internal) "
            f"SELECT id * 8 + {KIND_COMMENT}, body_text, ticket_id, NOT public FROM comments",
            f"INSERT INTO ticket_search (doc, body, ticket_id, internal) "
            f"SELECT a.id * 8 + {KIND_ATTACHMENT}, a.filename, a.ticket_id, coalesce(NOT c.public, false) "
            f"FROM attachments a LEFT JOIN comments c ON c.id = a.comment_id",
            f"INSERT INTO ticket_search (doc, title, body, contact_id) "
            f"SELECT id * 8 + {KIND_CONTACT}, name, email, id FROM contacts",
            "DELETE FROM mail_log_search",
            f"INSERT INTO mail_log_search (doc, document) SELECT id * 2 + {LOG_INBOUND}, "
            "mail_log_search_vector(subject, sender || ' ' || coalesce(message_id, '')) FROM inbound_mails",
            f"INSERT INTO mail_log_search (doc, document) SELECT id * 2 + {LOG_OUTBOUND}, "
            "mail_log_search_vector(subject, \"to\" || ' ' || cc || ' ' || message_id) FROM outbound_messages",
        ]
    return [
        "DELETE FROM ticket_search",
        f"INSERT INTO ticket_search (rowid, title, body, ticket_id, contact_id, internal) "
        f"SELECT id * 8 + {KIND_TICKET}, title, description, id, NULL, 0 FROM tickets",
        f"INSERT INTO ticket_search (rowid, title, body, ticket_id, contact_id, internal) "
        f"SELECT id * 8 + {KIND_COMMENT}, '', body_text, ticket_id, NULL, NOT public FROM comments",
        f"INSERT INTO ticket_search (rowid, title, body, ticket_id, contact_id, internal) "
        f"SELECT a.id * 8 + {KIND_ATTACHMENT}, '', a.filename, a.ticket_id, NULL, coalesce(NOT c.public, 0) "
        f"FROM attachments a LEFT JOIN comments c ON c.id = a.comment_id",
        f"INSERT INTO ticket_search (rowid, title, body, ticket_id, contact_id, internal) "
        f"SELECT id * 8 + {KIND_CONTACT}, name, email, NULL, id, 0 FROM contacts",
        "DELETE FROM mail_log_search",
        f"INSERT INTO mail_log_search (rowid, subject, addresses) SELECT id * 2 + {LOG_INBOUND}, subject, "
        "sender || ' ' || coalesce(message_id, '') FROM inbound_mails",
        f"INSERT INTO mail_log_search (rowid, subject, addresses) SELECT id * 2 + {LOG_OUTBOUND}, subject, "
        "\"to\" || ' ' || cc || ' ' || message_id FROM outbound_messages",
    ]


def reindex() -> None:
    """Rebuild every search document from the tables, in one transaction."""
    for statement in fill_statements(_dialect()):
        db.session.execute(text(statement))
    if _dialect() == "sqlite":
        db.session.execute(text("INSERT INTO ticket_search (ticket_search) VALUES ('optimize')"))
        db.session.execute(text("INSERT INTO mail_log_search (mail_log_search) VALUES ('optimize')"))
    db.session.commit()
