"""indexes for every list's order and filters; full-text search of tickets and of the mail logs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 03:00:00

The lists order by (created_at, id) newest first: each order and filter gets an index that
serves it, so a page reads its rows instead of sorting the table. The full-text indexes are
kept in step by triggers, so no code that writes tickets, comments, contacts, attachments or
log rows has to know about them: SQLite keeps them in FTS5 tables, PostgreSQL in tables with
a generated tsvector column and a GIN index. Their layout is described in helpdesk/search.py.
"""
import sqlalchemy as sa
from alembic import op

from helpdesk.search import (LOG_INBOUND, LOG_OUTBOUND, LANGUAGE, KIND_ATTACHMENT, KIND_COMMENT,
                             KIND_CONTACT, KIND_TICKET)

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

INDEXES = [
    ('tickets', 'ix_tickets_created', ['created_at', 'id']),
    ('tickets', 'ix_tickets_customer_created', ['customer_id', 'created_at', 'id']),
    ('tickets', 'ix_tickets_assignee_created', ['assignee_id', 'created_at', 'id']),
    ('inbound_mails', 'ix_inbound_mails_created', ['created_at', 'id']),
    ('inbound_mails', 'ix_inbound_mails_mailbox_created', ['mailbox_id', 'created_at', 'id']),
    ('inbound_mails', 'ix_inbound_mails_message_id', ['message_id']),
    ('outbound_messages', 'ix_outbound_messages_created', ['created_at', 'id']),
    ('contacts', 'ix_contacts_name', ['name', 'id']),
]

# One search document per ticket, comment, attachment and contact; the rowid says which
# (id * 8 + kind), so a trigger finds its document without a scan.
_SQLITE_TICKET_SEARCH = f"""
CREATE VIRTUAL TABLE ticket_search USING fts5(
    title, body, ticket_id UNINDEXED, contact_id UNINDEXED, internal UNINDEXED,
    tokenize = 'porter unicode61 remove_diacritics 2');

CREATE TRIGGER ticket_search_ticket_ai AFTER INSERT ON tickets BEGIN
  INSERT INTO ticket_search(rowid, title, body, ticket_id, contact_id, internal)
  VALUES (new.id * 8 + {KIND_TICKET}, new.title, new.description, new.id, NULL, 0);
END;
CREATE TRIGGER ticket_search_ticket_au AFTER UPDATE OF title, description ON tickets BEGIN
  UPDATE ticket_search SET title = new.title, body = new.description WHERE rowid = old.id * 8 + {KIND_TICKET};
END;
CREATE TRIGGER ticket_search_ticket_ad AFTER DELETE ON tickets BEGIN
  DELETE FROM ticket_search WHERE rowid = old.id * 8 + {KIND_TICKET};
END;

CREATE TRIGGER ticket_search_comment_ai AFTER INSERT ON comments BEGIN
  INSERT INTO ticket_search(rowid, title, body, ticket_id, contact_id, internal)
  VALUES (new.id * 8 + {KIND_COMMENT}, '', new.body_text, new.ticket_id, NULL, NOT new.public);
END;
CREATE TRIGGER ticket_search_comment_au AFTER UPDATE OF body_text, ticket_id, public ON comments BEGIN
  UPDATE ticket_search SET body = new.body_text, ticket_id = new.ticket_id, internal = NOT new.public
  WHERE rowid = old.id * 8 + {KIND_COMMENT};
END;
CREATE TRIGGER ticket_search_comment_ad AFTER DELETE ON comments BEGIN
  DELETE FROM ticket_search WHERE rowid = old.id * 8 + {KIND_COMMENT};
END;

CREATE TRIGGER ticket_search_attachment_ai AFTER INSERT ON attachments BEGIN
  INSERT INTO ticket_search(rowid, title, body, ticket_id, contact_id, internal)
  VALUES (new.id * 8 + {KIND_ATTACHMENT}, '', new.filename, new.ticket_id, NULL,
          coalesce((SELECT NOT public FROM comments WHERE id = new.comment_id), 0));
END;
CREATE TRIGGER ticket_search_attachment_au AFTER UPDATE OF filename, ticket_id ON attachments BEGIN
  UPDATE ticket_search SET body = new.filename, ticket_id = new.ticket_id WHERE rowid = old.id * 8 + {KIND_ATTACHMENT};
END;
CREATE TRIGGER ticket_search_attachment_ad AFTER DELETE ON attachments BEGIN
  DELETE FROM ticket_search WHERE rowid = old.id * 8 + {KIND_ATTACHMENT};
END;

CREATE TRIGGER ticket_search_contact_ai AFTER INSERT ON contacts BEGIN
  INSERT INTO ticket_search(rowid, title, body, ticket_id, contact_id, internal)
  VALUES (new.id * 8 + {KIND_CONTACT}, new.name, new.email, NULL, new.id, 0);
END;
CREATE TRIGGER ticket_search_contact_au AFTER UPDATE OF name, email ON contacts BEGIN
  UPDATE ticket_search SET title = new.name, body = new.email WHERE rowid = old.id * 8 + {KIND_CONTACT};
END;
CREATE TRIGGER ticket_search_contact_ad AFTER DELETE ON contacts BEGIN
  DELETE FROM ticket_search WHERE rowid = old.id * 8 + {KIND_CONTACT};
END;

CREATE VIRTUAL TABLE mail_log_search USING fts5(
    subject, addresses, tokenize = 'unicode61 remove_diacritics 2');

CREATE TRIGGER mail_log_search_inbound_ai AFTER INSERT ON inbound_mails BEGIN
  INSERT INTO mail_log_search(rowid, subject, addresses)
  VALUES (new.id * 2 + {LOG_INBOUND}, new.subject, new.sender || ' ' || coalesce(new.message_id, ''));
END;
CREATE TRIGGER mail_log_search_inbound_au AFTER UPDATE OF subject, sender, message_id ON inbound_mails BEGIN
  UPDATE mail_log_search SET subject = new.subject, addresses = new.sender || ' ' || coalesce(new.message_id, '')
  WHERE rowid = old.id * 2 + {LOG_INBOUND};
END;
CREATE TRIGGER mail_log_search_inbound_ad AFTER DELETE ON inbound_mails BEGIN
  DELETE FROM mail_log_search WHERE rowid = old.id * 2 + {LOG_INBOUND};
END;

CREATE TRIGGER mail_log_search_outbound_ai AFTER INSERT ON outbound_messages BEGIN
  INSERT INTO mail_log_search(rowid, subject, addresses)
  VALUES (new.id * 2 + {LOG_OUTBOUND}, new.subject, new."to" || ' ' || new.cc || ' ' || new.message_id);
END;
CREATE TRIGGER mail_log_search_outbound_au AFTER UPDATE OF subject, "to", cc, message_id ON outbound_messages BEGIN
  UPDATE mail_log_search SET subject = new.subject, addresses = new."to" || ' ' || new.cc || ' ' || new.message_id
  WHERE rowid = old.id * 2 + {LOG_OUTBOUND};
END;
CREATE TRIGGER mail_log_search_outbound_ad AFTER DELETE ON outbound_messages BEGIN
  DELETE FROM mail_log_search WHERE rowid = old.id * 2 + {LOG_OUTBOUND};
END;
"""

# PostgreSQL's parser keeps an address or a file name as one token: the punctuation is also
# turned into spaces so that each part ("jane", "example") is found on its own.
_PG_PARTS = "translate({0}, '@.<>-_+', '       ')"


def _pg_ticket_search() -> str:
    body = "coalesce(body, '')"
    vector = (f"setweight(to_tsvector('{LANGUAGE}', coalesce(title, '')), 'A') || "
              f"setweight(to_tsvector('{LANGUAGE}', {body} || ' ' || {_PG_PARTS.format(body)}), 'B')")
    return f"""
CREATE TABLE ticket_search (
    doc bigint PRIMARY KEY,
    title text NOT NULL DEFAULT '',
    body text NOT NULL DEFAULT '',
    ticket_id integer,
    contact_id integer,
    internal boolean NOT NULL DEFAULT false,
    document tsvector GENERATED ALWAYS AS ({vector}) STORED);
CREATE INDEX ix_ticket_search_document ON ticket_search USING gin (document);
CREATE INDEX ix_ticket_search_contact ON ticket_search (contact_id) WHERE contact_id IS NOT NULL;

CREATE FUNCTION ticket_search_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM ticket_search WHERE doc = OLD.id * 8 + {KIND_TICKET}; RETURN OLD;
  END IF;
  INSERT INTO ticket_search (doc, title, body, ticket_id) VALUES (NEW.id * 8 + {KIND_TICKET}, NEW.title, NEW.description, NEW.id)
  ON CONFLICT (doc) DO UPDATE SET title = EXCLUDED.title, body = EXCLUDED.body;
  RETURN NEW;
END $$;
CREATE TRIGGER ticket_search_ticket AFTER INSERT OR DELETE OR UPDATE OF title, description ON tickets
  FOR EACH ROW EXECUTE FUNCTION ticket_search_ticket();

CREATE FUNCTION ticket_search_comment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM ticket_search WHERE doc = OLD.id * 8 + {KIND_COMMENT}; RETURN OLD;
  END IF;
  INSERT INTO ticket_search (doc, body, ticket_id, internal)
  VALUES (NEW.id * 8 + {KIND_COMMENT}, NEW.body_text, NEW.ticket_id, NOT NEW.public)
  ON CONFLICT (doc) DO UPDATE SET body = EXCLUDED.body, ticket_id = EXCLUDED.ticket_id, internal = EXCLUDED.internal;
  RETURN NEW;
END $$;
CREATE TRIGGER ticket_search_comment AFTER INSERT OR DELETE OR UPDATE OF body_text, ticket_id, public ON comments
  FOR EACH ROW EXECUTE FUNCTION ticket_search_comment();

CREATE FUNCTION ticket_search_attachment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM ticket_search WHERE doc = OLD.id * 8 + {KIND_ATTACHMENT}; RETURN OLD;
  END IF;
  INSERT INTO ticket_search (doc, body, ticket_id, internal)
  VALUES (NEW.id * 8 + {KIND_ATTACHMENT}, NEW.filename, NEW.ticket_id,
          coalesce((SELECT NOT public FROM comments WHERE id = NEW.comment_id), false))
  ON CONFLICT (doc) DO UPDATE SET body = EXCLUDED.body, ticket_id = EXCLUDED.ticket_id;
  RETURN NEW;
END $$;
CREATE TRIGGER ticket_search_attachment AFTER INSERT OR DELETE OR UPDATE OF filename, ticket_id ON attachments
  FOR EACH ROW EXECUTE FUNCTION ticket_search_attachment();

CREATE FUNCTION ticket_search_contact() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM ticket_search WHERE doc = OLD.id * 8 + {KIND_CONTACT}; RETURN OLD;
  END IF;
  INSERT INTO ticket_search (doc, title, body, contact_id) VALUES (NEW.id * 8 + {KIND_CONTACT}, NEW.name, NEW.email, NEW.id)
  ON CONFLICT (doc) DO UPDATE SET title = EXCLUDED.title, body = EXCLUDED.body;
  RETURN NEW;
END $$;
CREATE TRIGGER ticket_search_contact AFTER INSERT OR DELETE OR UPDATE OF name, email ON contacts
  FOR EACH ROW EXECUTE FUNCTION ticket_search_contact();

CREATE TABLE mail_log_search (
    doc bigint PRIMARY KEY,
    document tsvector NOT NULL);
CREATE INDEX ix_mail_log_search_document ON mail_log_search USING gin (document);

CREATE FUNCTION mail_log_search_vector(subject text, addresses text) RETURNS tsvector
  LANGUAGE sql IMMUTABLE AS $$
  SELECT to_tsvector('simple', coalesce(subject, '') || ' ' || coalesce(addresses, '') || ' ' ||
                     {_PG_PARTS.format("coalesce(addresses, '')")})
$$;

CREATE FUNCTION mail_log_search_inbound() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM mail_log_search WHERE doc = OLD.id * 2 + {LOG_INBOUND}; RETURN OLD;
  END IF;
  INSERT INTO mail_log_search (doc, document)
  VALUES (NEW.id * 2 + {LOG_INBOUND}, mail_log_search_vector(NEW.subject, NEW.sender || ' ' || coalesce(NEW.message_id, '')))
  ON CONFLICT (doc) DO UPDATE SET document = EXCLUDED.document;
  RETURN NEW;
END $$;
CREATE TRIGGER mail_log_search_inbound AFTER INSERT OR DELETE OR UPDATE OF subject, sender, message_id ON inbound_mails
  FOR EACH ROW EXECUTE FUNCTION mail_log_search_inbound();

CREATE FUNCTION mail_log_search_outbound() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM mail_log_search WHERE doc = OLD.id * 2 + {LOG_OUTBOUND}; RETURN OLD;
  END IF;
  INSERT INTO mail_log_search (doc, document)
  VALUES (NEW.id * 2 + {LOG_OUTBOUND}, mail_log_search_vector(NEW.subject, NEW."to" || ' ' || NEW.cc || ' ' || NEW.message_id))
  ON CONFLICT (doc) DO UPDATE SET document = EXCLUDED.document;
  RETURN NEW;
END $$;
CREATE TRIGGER mail_log_search_outbound AFTER INSERT OR DELETE OR UPDATE OF subject, "to", cc, message_id ON outbound_messages
  FOR EACH ROW EXECUTE FUNCTION mail_log_search_outbound();
"""


# Retention reads only the rows whose raw bytes are still kept.
PARTIAL_INDEXES = [
    ('outbound_messages', 'ix_outbound_messages_raw_kept', ['created_at', 'raw_size'], 'raw_size IS NOT NULL'),
    ('inbound_mails', 'ix_inbound_mails_raw_kept', ['created_at', 'outcome', 'size', 'raw_key'], 'raw_key IS NOT NULL'),
]


def upgrade():
    with op.batch_alter_table('outbound_messages') as batch_op:
        batch_op.add_column(sa.Column('raw_size', sa.Integer(), nullable=True))
    op.execute('UPDATE outbound_messages SET raw_size = length(raw_sent) WHERE raw_sent IS NOT NULL')
    for table, name, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)
    for table, name, columns, where in PARTIAL_INDEXES:
        op.create_index(name, table, columns, unique=False, sqlite_where=sa.text(where),
                        postgresql_where=sa.text(where))
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_pg_ticket_search())
    else:
        for statement in _statements(_SQLITE_TICKET_SEARCH):
            op.execute(statement)
    # Rows written before this migration: the same documents the triggers write from now on.
    from helpdesk.search import fill_statements
    for statement in fill_statements(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TABLE ticket_search; DROP TABLE mail_log_search;")
        for table, trigger in (('tickets', 'ticket_search_ticket'), ('comments', 'ticket_search_comment'),
                               ('attachments', 'ticket_search_attachment'), ('contacts', 'ticket_search_contact'),
                               ('inbound_mails', 'mail_log_search_inbound'),
                               ('outbound_messages', 'mail_log_search_outbound')):
            op.execute(f"DROP TRIGGER {trigger} ON {table}; DROP FUNCTION {trigger}();")
        op.execute("DROP FUNCTION mail_log_search_vector(text, text);")
    else:
        for table in ('tickets', 'comments', 'attachments', 'contacts'):
            for suffix in ('ai', 'au', 'ad'):
                op.execute(f"DROP TRIGGER ticket_search_{table[:-1]}_{suffix}")
        for table in ('inbound', 'outbound'):
            for suffix in ('ai', 'au', 'ad'):
                op.execute(f"DROP TRIGGER mail_log_search_{table}_{suffix}")
        op.execute("DROP TABLE ticket_search")
        op.execute("DROP TABLE mail_log_search")
    for table, name, *_rest in reversed(INDEXES + PARTIAL_INDEXES):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table('outbound_messages') as batch_op:
        batch_op.drop_column('raw_size')


def _statements(script: str) -> list[str]:
    """Split a script at the statements' ends (a trigger's body ends with END;)."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        joined = "\n".join(current).strip()
        if joined.endswith(";") and (not joined.upper().startswith("CREATE TRIGGER") or joined.endswith("END;")):
            statements.append(joined)
            current = []
    return [s for s in statements if s]
