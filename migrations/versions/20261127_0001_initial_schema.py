"""initial schema: devices, runs, samples, epoch_metrics, latency_cache

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 19:37:58.942391

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('token', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('info', sa.Text(), nullable=False),
    sa.Column('lut', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('local', 'agent')", name=op.f('ck_devices_kind')),
    sa.CheckConstraint("status IN ('unknown', 'online', 'offline')", name=op.f('ck_devices_status')),
    sa.CheckConstraint('port IS NULL OR (port > 0 AND port < 65536)', name=op.f('ck_devices_port')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices')),
    sa.UniqueConstraint('name', name=op.f('uq_devices_name'))
    )
    op.create_table('latency_cache',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_key', sa.String(length=255), nullable=False),
    sa.Column('arch_hash', sa.String(length=64), nullable=False),
    sa.Column('input_shape', sa.String(length=64), nullable=False),
    sa.Column('stats', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_latency_cache')),
    sa.UniqueConstraint('device_key', 'arch_hash', 'input_shape', name=op.f('uq_latency_cache_device_key_arch_hash_input_shape'))
    )
    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('config', sa.Text(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.Column('run_dir', sa.String(length=1024), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('epoch', sa.Integer(), nullable=True),
    sa.Column('epochs', sa.Integer(), nullable=True),
    sa.Column('phase', sa.String(length=16), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('best_sample_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("phase IS NULL OR phase IN ('warmup', 'search')", name=op.f('ck_runs_phase')),
    sa.CheckConstraint("status IN ('queued', 'running', 'finished', 'failed', 'cancelled', 'interrupted')", name=op.f('ck_runs_status')),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_runs_device_id_devices'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('run_dir', name=op.f('uq_runs_run_dir'))
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_runs_device_id', ['device_id'], unique=False)
        batch_op.create_index('ix_runs_status', ['status'], unique=False)

    op.create_table('epoch_metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('train_loss', sa.Float(), nullable=True),
    sa.Column('train_accuracy', sa.Float(), nullable=True),
    sa.Column('expected_latency_ms', sa.Float(), nullable=True),
    sa.Column('entropy', sa.Float(), nullable=True),
    sa.Column('arch_probabilities', sa.Text(), nullable=True),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.CheckConstraint("phase IN ('warmup', 'search')", name=op.f('ck_epoch_metrics_phase')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_epoch_metrics_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_epoch_metrics')),
    sa.UniqueConstraint('run_id', 'epoch', name=op.f('uq_epoch_metrics_run_id_epoch'))
    )
    op.create_table('samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('arch_hash', sa.String(length=64), nullable=False),
    sa.Column('arch_json', sa.Text(), nullable=False),
    sa.Column('accuracy', sa.Float(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('latency_mean_ms', sa.Float(), nullable=True),
    sa.Column('latency_std_ms', sa.Float(), nullable=True),
    sa.Column('latency_p90_ms', sa.Float(), nullable=True),
    sa.Column('latency_min_ms', sa.Float(), nullable=True),
    sa.Column('predicted_latency_ms', sa.Float(), nullable=True),
    sa.Column('memory_mb', sa.Float(), nullable=True),
    sa.Column('params', sa.BigInteger(), nullable=True),
    sa.Column('macs', sa.BigInteger(), nullable=True),
    sa.Column('objective', sa.Float(), nullable=True),
    sa.Column('feasible', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('argmax', 'sampled')", name=op.f('ck_samples_kind')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_samples_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples')),
    sa.UniqueConstraint('run_id', 'epoch', 'kind', 'arch_hash', name=op.f('uq_samples_run_id_epoch_kind_arch_hash'))
    )
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index('ix_samples_arch_hash', ['arch_hash'], unique=False)
        batch_op.create_index('ix_samples_run_id_id', ['run_id', 'id'], unique=False)
        batch_op.create_index('ix_samples_run_id_latency_ms', ['run_id', 'latency_ms'], unique=False)

    # runs.best_sample_id -> samples.id closes the runs <-> samples cycle, so it is added once both
    # tables exist (use_alter in the model). batch: SQLite recreates the (empty) table, others ALTER.
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f('fk_runs_best_sample_id_samples'), 'samples', ['best_sample_id'], ['id'], ondelete='SET NULL'
        )



def downgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('fk_runs_best_sample_id_samples'), type_='foreignkey')

    op.drop_table('samples')
    op.drop_table('epoch_metrics')
    op.drop_table('runs')
    op.drop_table('latency_cache')
    op.drop_table('devices')
