"""a per-agent session token that signing out replaces, so copied session and remember-me cookies stop working

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 03:05:00

Flask-Login puts the agent's id in the session and in the remember-me cookie. The id never changes,
so a copied cookie kept working after sign-out. The cookies now carry "id:token" and the token
is replaced at sign-out; existing agents get a token of their own, so they sign in once more.
"""
import secrets

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_token', sa.String(length=64), nullable=False, server_default=''))
    agents = sa.table('agents', sa.column('id', sa.Integer), sa.column('session_token', sa.String))
    connection = op.get_bind()
    for (agent_id,) in connection.execute(sa.select(agents.c.id)).all():
        connection.execute(agents.update().where(agents.c.id == agent_id)
                           .values(session_token=secrets.token_urlsafe(32)))


def downgrade():
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('session_token')
