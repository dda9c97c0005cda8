"""``_construct.fast_init``: the faster constructors build exactly what dataclasses would."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any

import pytest

from extension_fsm import _construct, core, machine, model
from extension_fsm._construct import builder, fast_init

FAST = [
    *_construct._BUILDERS,  # every class the library sped up, its own ones included
]


def _plain_twin(cls: type) -> type:
    """The same dataclass, left as ``dataclasses`` builds it (the reference)."""
    fields = [
        (f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory))
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


def _values(cls: type) -> dict[str, Any]:
    """A distinct value per field, so a field stored in the wrong slot shows."""
    return {f.name: f"{f.name}-value" for f in dataclasses.fields(cls)}


def test_the_library_classes_are_all_sped_up() -> None:
    for cls in (core.Snapshot, core.Change, core.Decision, machine.Guard, model.Extension):
        assert cls in FAST
    assert len(FAST) == 22


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
def test_every_way_of_building_matches_the_dataclass(cls: type) -> None:
    values = _values(cls)
    reference = _plain_twin(cls)
    expected = repr(reference(**values)).replace(reference.__qualname__, cls.__qualname__, 1)
    built = [cls(**values), cls(*values.values()), builder(cls)(*values.values())]
    built.append(dataclasses.replace(built[0], **values))
    built.append(pickle.loads(pickle.dumps(built[1])))
    for obj in built:
        assert type(obj) is cls
        assert repr(obj) == expected
        assert obj == built[0] and hash(obj) == hash(built[0])
        assert {k: getattr(obj, k) for k in values} == values
    assert str(inspect.signature(cls)) == str(inspect.signature(reference))


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
def test_instances_stay_frozen(cls: type) -> None:
    obj = builder(cls)(*_values(cls).values())
    for name in _values(cls):
        with pytest.raises(FrozenInstanceError):
            setattr(obj, name, "changed")
        with pytest.raises(FrozenInstanceError):
            delattr(obj, name)
    # Python 3.11's frozen+slots __setattr__ refuses other names with a TypeError.
    for name in ("__class__", "not_a_field"):
        with pytest.raises((AttributeError, TypeError)):
            setattr(obj, name, _plain_twin(cls))
    assert type(obj) is cls
    assert {k: getattr(obj, k) for k in _values(cls)} == _values(cls)


@fast_init
@dataclass(frozen=True, slots=True)
class _Sample:
    a: int
    b: str = "b"
    c: list[int] = field(default_factory=list)


def test_defaults_and_default_factories_are_the_dataclass_ones() -> None:
    first, second = _Sample(1), _Sample(a=2, c=[3])
    assert (first.a, first.b, first.c) == (1, "b", [])
    assert first.c is not _Sample(1).c  # a fresh list each time
    assert (second.a, second.b, second.c) == (2, "b", [3])
    with pytest.raises(TypeError):
        _Sample()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Sample(1, "b", [], 4)  # type: ignore[call-arg]


def test_a_subclass_is_built_the_dataclass_way() -> None:
    class Loose(_Sample):  # has a __dict__
        pass

    class Tight(_Sample):
        __slots__ = ()

    for sub in (Loose, Tight):
        obj = sub(5, "x")
        assert type(obj) is sub and (obj.a, obj.b, obj.c) == (5, "x", [])
        with pytest.raises(FrozenInstanceError):
            obj.a = 6  # type: ignore[misc]


def test_only_plain_frozen_slotted_dataclasses_are_taken() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class NoInitField:
        a: int
        b: int = field(init=False, default=0)

    for cls in (NoSlots, PostInit, NoInitField):
        with pytest.raises(TypeError):
            fast_init(cls)
