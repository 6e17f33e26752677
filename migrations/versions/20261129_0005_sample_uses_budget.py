"""sample uses_budget: whether a sample uses at least 0.85 T of every absolute target

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 13:40:00

The pick ranks the samples within [0.85 T, T] of an absolute target above faster ones
(search_core/best.py). Stored samples keep null: the rule counts it as true, so their runs' best
stays what it was.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.add_column(sa.Column('uses_budget', sa.Boolean(), nullable=True))


def downgrade():
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_column('uses_budget')
