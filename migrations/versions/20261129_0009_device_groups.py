"""device groups: identical agents that measure as one pool

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 19:30:00

A group of registered agents (devices.group_id) measures as one pool; a run on a group keeps it in
runs.group_id. Deleting a group leaves its devices and runs, without it.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'device_groups',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_device_groups')),
        sa.UniqueConstraint('name', name=op.f('uq_device_groups_name')),
    )
    for table in ('devices', 'runs'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('group_id', sa.Integer(), nullable=True))
            batch_op.create_foreign_key(batch_op.f('fk_{}_group_id_device_groups'.format(table)),
                                        'device_groups', ['group_id'], ['id'],
                                        ondelete='SET NULL')


def downgrade():
    for table in ('runs', 'devices'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f('fk_{}_group_id_device_groups'.format(table)),
                                     type_='foreignkey')
            batch_op.drop_column('group_id')
    op.drop_table('device_groups')
