"""run resolved: what the worker resolved of the requested settings, kept apart from them

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 23:30:00

A run's `config` is what was asked for (an automatic T is null there); `resolved` holds what its
worker made of it: the automatic T it computed, the device address it measured at. Before, the
worker's values overwrote the request. Null for runs from before (their config holds both).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resolved', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('resolved')
