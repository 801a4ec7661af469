"""OAuth 2.0 sign-in for SMTP and mailboxes, credential health, and the IDLE watch's state

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 03:10:00
"""
import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_HEALTH = ('auth_method', 'sign_in_ok_at', 'sign_in_failed_at', 'sign_in_error', 'sign_in_failures',
           'sign_in_incident_at', 'oauth_connection_id')


def _health_columns():
    return [
        sa.Column('auth_method', sa.String(length=20), nullable=False, server_default='password'),
        sa.Column('sign_in_ok_at', sa.DateTime(), nullable=True),
        sa.Column('sign_in_failed_at', sa.DateTime(), nullable=True),
        sa.Column('sign_in_error', sa.Text(), nullable=False, server_default=''),
        sa.Column('sign_in_failures', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('sign_in_incident_at', sa.DateTime(), nullable=True),
        sa.Column('oauth_connection_id', sa.Integer(), nullable=True),
    ]


def upgrade():
    op.create_table(
        'oauth_connections',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('provider', sa.String(length=20), nullable=False),
        sa.Column('flow', sa.String(length=30), nullable=False),
        sa.Column('client_id', sa.String(length=255), nullable=False),
        sa.Column('client_secret_encrypted', sa.Text(), nullable=False),
        sa.Column('tenant', sa.String(length=100), nullable=False),
        sa.Column('authorize_url', sa.String(length=500), nullable=False),
        sa.Column('token_url', sa.String(length=500), nullable=False),
        sa.Column('scopes', sa.String(length=1000), nullable=False),
        sa.Column('account', sa.String(length=254), nullable=False),
        sa.Column('refresh_token_encrypted', sa.Text(), nullable=False),
        sa.Column('access_token_encrypted', sa.Text(), nullable=False),
        sa.Column('access_token_expires_at', sa.DateTime(), nullable=True),
        sa.Column('access_token_obtained_at', sa.DateTime(), nullable=True),
        sa.Column('connected_at', sa.DateTime(), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_connections')),
    )
    for table in ('smtp_config', 'mailboxes'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in _health_columns():
                batch_op.add_column(column)
            batch_op.create_foreign_key(op.f(f'fk_{table}_oauth_connection_id_oauth_connections'),
                                        'oauth_connections', ['oauth_connection_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('push_state', sa.String(length=20), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('push_since', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('push_note', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('push_seen_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        for name in ('push_seen_at', 'push_note', 'push_since', 'push_state'):
            batch_op.drop_column(name)
    for table in ('mailboxes', 'smtp_config'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f'fk_{table}_oauth_connection_id_oauth_connections'), type_='foreignkey')
            for name in reversed(_HEALTH):
                batch_op.drop_column(name)
    op.drop_table('oauth_connections')
