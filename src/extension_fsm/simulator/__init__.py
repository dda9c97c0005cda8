"""The timeline simulator: scenario files played on a virtual clock.

A separate product from the library above it: a host never imports this
package, and nothing in the library imports it (a test walks the imports to
keep it so).  It holds the ``extension-fsm run`` machinery (scenario files,
the timeline player, its results and sequence diagrams, random scenarios,
expectation checks, machine diagrams) and the test harness the suite shares:

- :class:`World`: an :class:`~extension_fsm.ExtensionService` over a store
  (in memory unless given one) with recording delivery fakes, a virtual
  clock and the host's session timers;
- :func:`make_session` and :func:`make_payment`: rows to seed a store with.
"""

from __future__ import annotations

from .simulation import World, make_payment, make_session

__all__ = ["World", "make_payment", "make_session"]
