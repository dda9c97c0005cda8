"""DESIGN.md §3 invariants under interleaved races, over the in-memory store."""

from __future__ import annotations

from tests.property.races import ExtensionRaces

TestExtensionRacesInMemory = ExtensionRaces.TestCase
