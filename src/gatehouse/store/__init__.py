"""Storage: SQLAlchemy models, the database engine, migrations. The one place SQL lives."""
