"""The dashboard: Flask + Flask-SocketIO, SQLAlchemy models, Alembic migrations in migrations/.

(The application arrives with the dashboard issue.)
"""
