"""sample latency median: latency_ms becomes the fastest run, the median gets its own column

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 23:20:00

Until this revision a sample's latency_ms was the median of its timed runs; from now on the search
optimises the fastest run (nano_agent.measure.latency_ms) and latency_ms holds that. The stored rows
keep the latency their search optimised, and their median is copied into latency_median_ms.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.add_column(sa.Column('latency_median_ms', sa.Float(), nullable=True))
    op.execute("UPDATE samples SET latency_median_ms = latency_ms")


def downgrade():
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_column('latency_median_ms')
