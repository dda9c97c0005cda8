"""The ``extension-fsm`` command: exit statuses, bad files, the JSON contract,
injected bugs caught, random timelines, diagrams."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from extension_fsm.adapters.memory import MemoryPresence
from extension_fsm.cli import default_db, main
from extension_fsm.core import outcomes
from extension_fsm.machine import (
    EXTENSION_MACHINE,
    EXTENSION_TRANSITIONS,
    SESSION_MACHINE,
    StateMachine,
    TransitionRow,
)
from extension_fsm.model import ExtensionStatus
from extension_fsm.simulator.diagram import render_dot, render_mermaid
from extension_fsm.simulator.expect import mismatches

ROOT = Path(__file__).resolve().parents[2]
TIMELINES = ROOT / "examples" / "timelines"
REQUEST = {"at": 0, "do": "request", "duration_minutes": 15, "price": 15000, "payment_id": "p1"}


def _write(tmp_path: Path, doc: Any, name: str = "scenario.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


# ------------------------------------------------------------------ bad files


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"steps": [{"at": 0, "do": "requets"}]}, "step 0: field 'do'"),
        (
            {
                "steps": [
                    {"at": 0, "do": "sweep"},
                    {"at": 5, "do": "sweep"},
                    {"at": 2, "do": "sweep"},
                ]
            },
            "step 2 (sweep): field 'at'",
        ),
        ({"steps": [{**REQUEST, "price": "15000"}]}, "step 0 (request): field 'price'"),
        (
            {"steps": [{**REQUEST, "duration_minutes": True}]},
            "step 0 (request): field 'duration_minutes'",
        ),
        (
            {"steps": [{"at": 0, "do": "request", "price": 1, "payment_id": "p1"}]},
            "step 0 (request): field 'duration_minutes'",
        ),
        (
            {"steps": [REQUEST, {"at": 1, "do": "accept", "mitra": "m2"}]},
            "step 1 (accept): field 'mitra'",
        ),
        ({"steps": [{"do": "sweep"}]}, "step 0 (sweep): field 'at'"),
        (
            {"steps": [{"at": 0, "do": "accept", "extension": 0}]},
            "step 0 (accept): field 'extension'",
        ),
        ({"steps": [{"at": 0, "do": "mitra"}]}, "step 0 (mitra)"),
        ({"sesion": {}, "steps": []}, "field 'sesion'"),
        ({"config": {"timeout_seconds": -1}, "steps": []}, "field 'config.timeout_seconds'"),
        ({"payments": [{"amount": 1}], "steps": []}, "field 'payments[0].id'"),
        ({"config": {}}, "field 'steps'"),
        ({"steps": [], "expect": {"extension": []}}, "field 'expect.extension'"),
        ({"steps": [{"at": 9, "do": "sweep"}], "until": 3}, "field 'until'"),
        ('{"steps": [', "file: invalid JSON"),
        ("[1, 2]", "file"),
    ],
)
def test_bad_scenario_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: Any, where: str
) -> None:
    path = _write(tmp_path, doc)
    status, out, err = _run(capsys, "simulate", "--db", "memory", str(path))
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err and where in err


@pytest.mark.parametrize(
    ("doc", "where", "problem"),
    [
        (
            {"steps": [{**_without(REQUEST, "duration_minutes"), "durration_minutes": 15}]},
            "step 0 (request): field 'durration_minutes'",
            "unknown key; did you mean 'duration_minutes'? ('duration_minutes' is required)",
        ),
        (
            {"session": {"minutes_lef": 3}, "steps": []},
            "field 'session.minutes_lef'",
            "unknown key; did you mean 'minutes_left'?",
        ),
        (
            {"steps": [{"at": 0, "do": "accept", "extensoin": 0}]},
            "step 0 (accept): field 'extensoin'",
            "unknown key; did you mean 'extension'?",
        ),
        (
            {"session": {"colour": "red"}, "steps": []},
            "field 'session.colour'",
            "unknown key (known: id, customer_id, customer_name, mitra_id, status, minutes_left)",
        ),
    ],
)
def test_a_misspelt_field_is_named_with_its_near_miss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: Any, where: str, problem: str
) -> None:
    status, out, err = _run(capsys, "simulate", "--db", "memory", str(_write(tmp_path, doc)))
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and err.endswith(f"scenario.json: {where}: {problem}\n")


def test_bad_toml_and_unreadable_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _write(tmp_path, "steps = [\n", "broken.toml")
    assert _run(capsys, "simulate", "--db", "memory", str(toml))[0] == 2
    status, _, err = _run(capsys, "simulate", "--db", "memory", str(tmp_path / "absent.json"))
    assert status == 2 and "absent.json" in err and "cannot read" in err
    yaml = _write(tmp_path, "steps: []", "scenario.yaml")
    assert _run(capsys, "simulate", "--db", "memory", str(yaml))[0] == 2


def test_command_line_misuse_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "simulate")[0] == 2
    assert _run(capsys, "simulate", "x.json", "--random", "3")[0] == 2
    status, _, err = _run(capsys, "simulate", "--db", "bogus://x", str(TIMELINES / "accept.json"))
    assert status == 2 and "unsupported --db" in err
    for db in ([], ["--db", "memory"], ["--db", "sqlite://"]):
        status, _, err = _run(capsys, "simulate", "--random", "2", "--reuse-db", *db)
        assert status == 2 and "--reuse-db goes with --db" in err


# ---------------------------------------------------------------- the contract


def test_json_document_has_the_contract_names(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(
        capsys, "simulate", "--json", "--db", "memory", str(TIMELINES / "duplicate-answer.json")
    )
    doc = json.loads(out)
    assert status == 0
    assert list(doc) == [
        "extensions",
        "session",
        "payments",
        "transactions",
        "deliveries",
        "errors",
        "invariants",
    ]
    assert set(doc["extensions"][0]) == {
        "id",
        "status",
        "via_timeout",
        "reason",
        "duration_minutes",
        "price",
        "payment_id",
        "resolved_at",
    }
    assert set(doc["session"]) == {"id", "status", "expires_at"}
    assert set(doc["payments"][0]) == {"id", "status", "failure_cause"}
    assert doc["transactions"] == [{"type": "extension", "amount": 15000}]
    assert all(set(d) == {"at", "channel", "to", "type", "payload"} for d in doc["deliveries"])
    assert doc["errors"] == [
        {"at": 6.0, "step": 2, "code": "EXTENSION_RESOLVED", "status_code": 409}
    ]
    assert doc["invariants"] == {"ok": True, "violations": []}


def test_runs_are_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(TIMELINES / "mitra-offline-incident.json")
    first = _run(capsys, "simulate", "--json", "--db", "memory", path)[1]
    assert first == _run(capsys, "simulate", "--json", "--db", "memory", path)[1]


def test_rich_view_shows_the_timeline(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(
        capsys, "simulate", "--db", "memory", str(TIMELINES / "mitra-offline-incident.json")
    )
    assert status == 0
    for text in (
        "time",
        "actor",
        "deliveries",
        "push→mitra extension_request",
        "extension_safeguard_tripped",
        "EXTENSION_RESOLVED",
        "invariants: all hold",
        "expect: matches",
    ):
        assert text in out


def test_a_wrong_expectation_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads((TIMELINES / "accept.json").read_text())
    doc["expect"] = {"session": {"expires_at": 1201.0}}
    status, out, _ = _run(capsys, "simulate", "--db", "memory", str(_write(tmp_path, doc)))
    assert status == 1
    assert "session.expires_at: want 1201.0, got 1200.0" in out


def test_expect_matcher_is_partial_but_strict_on_lists() -> None:
    got = {"a": [{"x": 1, "y": 2}], "b": True}
    assert mismatches({"a": [{"x": 1}]}, got) == []
    assert mismatches({"a": []}, got) == ["a: want 0 items, got 1"]
    assert mismatches({"b": 1}, got) == ["b: want 1, got True"]
    assert mismatches({"c": 1}, got) == ["c: missing"]


# ------------------------------------------------------------ injected bugs


def test_a_lying_presence_is_caught_as_invariant_5(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def always_online(self: MemoryPresence, mitra_id: str) -> bool:
        return True

    monkeypatch.setattr(MemoryPresence, "is_online", always_online)
    path = str(TIMELINES / "safeguard-offline.json")
    status, out, _ = _run(capsys, "simulate", "--json", "--db", "memory", path)
    doc = json.loads(out)
    assert status == 1
    assert doc["invariants"]["ok"] is False
    assert any(v.startswith("at 10s: 5: ") for v in doc["invariants"]["violations"])


def test_a_payment_left_confirmed_is_caught_as_invariant_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(outcomes, "_fail_payment", lambda payment, cause, now: None)
    status, out, _ = _run(capsys, "simulate", "--db", "memory", str(TIMELINES / "reject.json"))
    assert status == 1
    assert "invariants violated" in out and "2: extension" in out


# ------------------------------------------------------------------ random


def test_random_200_seed_1_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(
        capsys, "simulate", "--random", "200", "--seed", "1", "--out", str(tmp_path)
    )
    assert status == 0, out
    assert "every invariant held" in out
    assert "accepted" in out and "safeguard" in out and "refused calls" in out
    assert list(tmp_path.iterdir()) == []


def _cli(*argv: str, block_rich: bool = False) -> list[str]:
    """The command line of ``extension-fsm`` in a child process, without the
    ``rich`` package importable when ``block_rich`` (the ``cli`` extra absent)."""
    code = "import sys\n"
    if block_rich:
        code += "sys.modules['rich'] = None  # import rich: ImportError\n"
    code += "from extension_fsm.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return [sys.executable, "-c", code, *argv]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}


def test_random_runs_without_the_cli_extra_and_is_quiet_when_piped(tmp_path: Path) -> None:
    done = subprocess.run(
        _cli("simulate", "--random", "5", "--seed", "2", "--out", str(tmp_path), block_rich=True),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar into a pipe, no warning
    lines = done.stdout.splitlines()
    assert lines[0].startswith("5 random timelines, seed 2, db memory: ")
    assert "steps " in lines[0] and lines[-1] == "every invariant held"
    assert "\x1b" not in done.stdout  # plain text


def test_the_table_view_still_names_the_missing_extra(tmp_path: Path) -> None:
    done = subprocess.run(
        _cli("simulate", "--db", "memory", str(TIMELINES / "accept.json"), block_rich=True),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "pip install 'extension-fsm[cli]'" in done.stderr


def test_random_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    # stderr is a terminal (a pseudo-terminal read here), stdout a pipe
    main_fd, term_fd = pty.openpty()
    env = {**_env(), "TERM": "xterm", "COLUMNS": "160"}
    child = subprocess.Popen(
        _cli("simulate", "--random", "40", "--seed", "6", "--out", str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=term_fd,
        env=env,
        text=True,
    )
    os.close(term_fd)
    shown = b""
    while True:  # read until the child closes the terminal (EIO) or ends it
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0, out
    screen = shown.decode("utf-8", "replace")
    assert "random timelines (seed 6)" in screen
    assert re.search(r"\d+/40", screen)  # the count
    assert re.search(r"\d+\.\d timelines/s", screen)  # the rate
    assert " left " in screen  # and the time left
    assert out.startswith("40 random timelines, seed 6, db memory: ")


def test_random_failures_are_written_out_and_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(outcomes, "_fail_payment", lambda payment, cause, now: None)
    status, out, _ = _run(
        capsys, "simulate", "--random", "40", "--seed", "3", "--out", str(tmp_path)
    )
    assert status == 1
    written = sorted(tmp_path.glob("failed-seed3-*.json"))
    assert written and "replay: extension-fsm simulate" in out
    replay = _run(capsys, "simulate", "--json", "--db", "memory", str(written[0]))
    assert replay[0] == 1
    assert json.loads(replay[1])["invariants"]["ok"] is False


# ----------------------------------------------------------------- diagrams


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_diagram_draws_every_row_of_both_tables(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "diagram", "--format", fmt)
    assert status == 0
    arrow = "-->" if fmt == "mermaid" else "->"
    for machine in (EXTENSION_MACHINE, SESSION_MACHINE):
        for row in machine.rows:
            for src in row.source:
                edge = [
                    line
                    for line in out.splitlines()
                    if f"{machine.name}_{src} {arrow} {machine.name}_{row.dest} " in line
                    and row.trigger in line
                ]
                assert edge, (machine.name, row)
                assert all(any(g in line for line in edge) for g in row.conditions)


def test_diagram_follows_the_table_it_is_given() -> None:
    extra = TransitionRow(
        "escalate", (ExtensionStatus.PENDING,), ExtensionStatus.TIMEOUT, ("is_due",)
    )
    machine = StateMachine(
        "extension",
        ExtensionStatus,
        (*EXTENSION_TRANSITIONS, extra),
        final=(ExtensionStatus.ACCEPTED,),
    )
    mermaid = render_mermaid([machine])
    assert "extension_pending --> extension_timeout : escalate [is_due]" in mermaid
    assert "extension_timeout --> [*]" not in mermaid
    assert 'extension_timeout [label="timeout", shape=circle]' in render_dot([machine])


def test_help_names_the_default_database(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert f"(here: {default_db()})" in capsys.readouterr().out.replace("\n", " ").replace(
        "  ", " "
    )


def test_help_says_a_database_is_written_to(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "A database given here is written to: the library's tables are created" in text
    assert "must be empty (no other tables, no rows) unless --reuse-db is given" in text
    assert "--reuse-db play into a --db database that already holds data" in text


def test_extension_index_counts_request_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "payments": [{"id": "p1"}],
        "steps": [
            {**REQUEST, "price": 1},  # refused: request step 0 creates nothing
            {**REQUEST, "at": 1},  # request step 1
            {"at": 2, "do": "accept", "extension": 0},
            {"at": 3, "do": "accept", "extension": 1},
        ],
    }
    status, out, _ = _run(
        capsys, "simulate", "--json", "--db", "memory", str(_write(tmp_path, doc))
    )
    result = json.loads(out)
    assert status == 0
    assert [e["status"] for e in result["extensions"]] == ["accepted"]
    assert result["extensions"][0]["resolved_at"] == 3.0
    assert [(e["step"], e["code"]) for e in result["errors"]] == [
        (0, "VALIDATION_ERROR"),
        (2, "EXTENSION_RESOLVED"),
    ]


# ----------------------------------------------------- formats and schemas


def test_format_sequence_prints_the_runs_diagram(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(TIMELINES / "reject.json")
    status, out, err = _run(capsys, "simulate", "--db", "memory", path, "--format", "sequence")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "sequenceDiagram"
    assert any(line.startswith("    M->>S: ") and "reject" in line for line in lines)
    assert any("session_closing" in line for line in lines)


def test_format_json_and_the_json_alias_print_the_same_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = str(TIMELINES / "accept.json")
    by_format = _run(capsys, "simulate", "--db", "memory", path, "--format", "json")
    by_alias = _run(capsys, "simulate", "--db", "memory", path, "--json")
    assert by_format[0] == by_alias[0] == 0
    assert json.loads(by_format[1]) == json.loads(by_alias[1])


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--format", "sequence"],
        ["--format", "table", "--json"],
    ],
)
def test_conflicting_format_flags_are_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    status, out, err = _run(capsys, "simulate", str(TIMELINES / "accept.json"), *argv)
    assert status == 2 and out == "" and "--json means --format json" in err


def test_format_goes_with_one_scenario_not_random(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "simulate", "--random", "2", "--format", "sequence")
    assert status == 2 and "--format shows one scenario" in err


def test_a_broken_invariant_exits_1_in_every_format(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lying(self: MemoryPresence, mitra_id: str) -> bool:
        return True

    monkeypatch.setattr(MemoryPresence, "is_online", lying)
    path = str(TIMELINES / "safeguard-offline.json")
    for fmt in ("json", "sequence"):
        status, out, err = _run(capsys, "simulate", "--db", "memory", path, "--format", fmt)
        assert status == 1 and out and "approved via timeout" in err


@pytest.mark.parametrize("what", ["scenario", "messages"])
def test_schema_prints_a_json_schema(capsys: pytest.CaptureFixture[str], what: str) -> None:
    status, out, _ = _run(capsys, "schema", what)
    schema = json.loads(out)
    assert status == 0
    names = set(schema["$defs"])
    if what == "scenario":
        assert {"RequestStep", "AnswerStep", "PaymentSpec"} <= names
        assert schema["required"] == ["steps"]
    else:
        assert {"ExtensionRequest", "ExtensionAccepted", "Push", "PendingExtension"} <= names
