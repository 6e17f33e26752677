"""run val_size: the validation images behind the shared-weight accuracies, for the pick's noise

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 09:00:00

The worker's `started` event gives the size of the validation split; the run page's pick panel
says which runners-up lie within that split's sampling error of the pick. Null for runs from before.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('val_size', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('val_size')
