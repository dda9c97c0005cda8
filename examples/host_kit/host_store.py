"""A host's store: the library's SQL adapter over the host's own tables.

The host keeps the Node service's schema (``chat_sessions``,
``payment_sessions``, ``session_extensions`` with ``requested_price`` ...,
``customer_transactions``) and names the two tables the library adds in its
own style (``ext_outbox``, ``ext_history``).  ``namespace`` prefixes every
name, so several test runs can share one database.
"""

from __future__ import annotations

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore

HOST_TABLES = {
    "customers": "customers",
    "chat_sessions": "chat_sessions",
    "payment_sessions": "payment_sessions",
    "customer_transactions": "customer_transactions",
    "extensions": "session_extensions",
    "extension_outbox": "ext_outbox",
    "extension_transitions": "ext_history",
}


async def open_host_store(url: str, *, namespace: str = "") -> SqlAlchemyStore:
    """The host's store at ``url``, its tables created when missing."""
    names = {key: f"{namespace}{name}" for key, name in HOST_TABLES.items()}
    return await SqlAlchemyStore.open(
        url, layout="seed", table_names=names, create_schema=True, clock="local"
    )
