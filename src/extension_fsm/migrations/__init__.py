"""The Alembic environment and revisions for the reference schema.

Run them with ``extension-fsm db upgrade --db URL`` (see :mod:`extension_fsm.migrate`),
or from a host's own Alembic (``version_locations`` plus the ``extension_fsm``
branch label; ``docs/operations.md`` shows how).  Nothing here is imported by
the library at run time.
"""
