"""device lookup tables: one calibrated table per device and setting, which runs reuse

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:30:00

Until this revision a device kept one uncalibrated table (devices.lut) that no run used. Each
device now keeps a calibrated table per setting (resolution, width, classes, input channels) and
measuring identity in device_luts. A stored table moves there; it was never calibrated, so runs
will not pick it, but it stays downloadable.
"""
import json

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'device_luts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('device_key', sa.String(length=255), nullable=False),
        sa.Column('resolution', sa.Integer(), nullable=False),
        sa.Column('width_mult', sa.Float(), nullable=False),
        sa.Column('num_classes', sa.Integer(), nullable=False),
        sa.Column('in_channels', sa.Integer(), nullable=False),
        sa.Column('lut', sa.Text(), nullable=False),
        sa.Column('profiled_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_device_luts_device_id_devices'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'],
                                name=op.f('fk_device_luts_run_id_runs'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_device_luts')),
        sa.UniqueConstraint('device_id', 'device_key', 'resolution', 'width_mult', 'num_classes',
                            'in_channels', name=op.f('uq_device_luts_device_id_device_key_resolution_width_mult_num_classes_in_channels')),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.text(
        "SELECT id, lut, lut_profiled_at, created_at FROM devices WHERE lut IS NOT NULL")).all()
    for device_id, text, profiled_at, created_at in rows:
        lut = json.loads(text)
        space = lut.get('space') or {}
        connection.execute(sa.text(
            "INSERT INTO device_luts (device_id, device_key, resolution, width_mult, num_classes, "
            "in_channels, lut, profiled_at) VALUES (:device_id, :device_key, :resolution, "
            ":width_mult, :num_classes, :in_channels, :lut, :profiled_at)"), {
                'device_id': device_id, 'device_key': 'agent:{}'.format(lut.get('device_id')),
                'resolution': space.get('resolution', 0), 'width_mult': space.get('width_mult', 0.0),
                'num_classes': space.get('num_classes', 0),
                'in_channels': space.get('in_channels', 0), 'lut': text,
                'profiled_at': profiled_at or created_at})
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('lut_profiled_at')
        batch_op.drop_column('lut')


def downgrade():
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lut', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('lut_profiled_at', sa.DateTime(timezone=True), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(sa.text(
        "SELECT device_id, lut, profiled_at FROM device_luts ORDER BY profiled_at")).all()
    for device_id, text, profiled_at in rows:  # the newest table of each device is kept
        connection.execute(sa.text("UPDATE devices SET lut = :lut, lut_profiled_at = :at "
                                   "WHERE id = :id"),
                           {"lut": text, "at": profiled_at, "id": device_id})
    op.drop_table('device_luts')
