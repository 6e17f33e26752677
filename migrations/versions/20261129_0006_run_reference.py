"""run reference: MobileNetV2 evaluated like a sample, the reference point on the run page

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 17:00:00

The worker evaluates MobileNetV2 at the run's setting after every search epoch (the `reference`
event); the run keeps the latest as JSON. Null for runs from before, and until the first search
epoch.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reference', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('reference')
