"""ranking checks: K architectures of a run retrained to check its shared-weight ranking

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 02:30:00

A check asked for from the run page: how many architectures, how many epochs and the seed their
retrainings use; the retrainings are rows of `trainings`, each naming its check.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'ranking_checks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('architectures', sa.Integer(), nullable=False),
        sa.Column('epochs', sa.Integer(), nullable=False),
        sa.Column('seed', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_ranking_checks_run_id_runs'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ranking_checks')),
    )
    with op.batch_alter_table('trainings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ranking_check_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_trainings_ranking_check_id_ranking_checks'),
                                    'ranking_checks', ['ranking_check_id'], ['id'],
                                    ondelete='SET NULL')


def downgrade():
    with op.batch_alter_table('trainings', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_trainings_ranking_check_id_ranking_checks'),
                                 type_='foreignkey')
        batch_op.drop_column('ranking_check_id')
    op.drop_table('ranking_checks')
