"""Channel-layer publishing: job progress, the user's job list, worker wake-ups.

Channel layers are at-most-once: nothing here carries state that is not also in
the database; pages re-sync from a snapshot and workers poll.
"""
