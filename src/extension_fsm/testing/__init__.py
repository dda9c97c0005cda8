"""A test kit for hosts: prove an adapter of your own keeps the invariants.

Install with the ``testing`` extra (``pip install 'extension-fsm[testing]'``).

- :class:`StoreContract`: the store contract as a pytest base class; subclass
  it as ``TestYourStore`` and build your store in ``make_store``.
- :class:`ExtensionRaces`: the hypothesis race machine (requests, answers,
  timers, sweeps, restarts, faults); subclass it, build your store in
  ``make_store`` and expose ``YourMachine.TestCase``.
- :func:`check_invariants`: the data-level invariant checker.
- :mod:`extension_fsm.testing.strategies`: hypothesis strategies for
  sessions, payments and scenarios.
"""

from __future__ import annotations

from ..invariants import check_invariants
from .contract import StoreContract
from .faults import Faults
from .lanes import OutboxLanesContract
from .loop import VirtualTimeLoop, YieldingStore
from .races import ExtensionRaces
from .strategies import payments, scenarios, sessions

__all__ = [
    "ExtensionRaces",
    "Faults",
    "OutboxLanesContract",
    "StoreContract",
    "VirtualTimeLoop",
    "YieldingStore",
    "check_invariants",
    "payments",
    "scenarios",
    "sessions",
]
