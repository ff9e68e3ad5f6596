"""The durable job queue in the database: enqueue, claim shares and chunks under leases, record results, leave.

Everything here is synchronous ORM / raw SQL, called by the worker through
`database_sync_to_async`. The database is the source of truth; the channel
layer only wakes workers (jobs/progress/).
"""
