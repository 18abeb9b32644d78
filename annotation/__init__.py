"""Human preference collection: the store (SQLAlchemy, Alembic), assignment, export to training data, agreement."""
