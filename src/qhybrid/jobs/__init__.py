"""Jobs: the durable state machine and everything that keeps it moving.

The job model and its store (SQLAlchemy + Alembic), the queue adapter, the journey a worker runs
and the reconciler. The database is the source of truth.
"""
