"""``extension-fsm history``: one extension's moves, deliveries and payment
events, on SQLite and PostgreSQL, from a real timeline that retried a push
and timed out (``history_timeline.py``)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from extension_fsm.cli import main
from tests.integration.sql_support import private_postgres_database
from tests.ops.history_timeline import play

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def played(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(database URL, extension id)`` of the timeline played on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.db'}"
        yield url, asyncio.run(play(url))
        return
    with private_postgres_database("history") as url:
        yield url, asyncio.run(play(url))


def _history(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["history", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_history_json_has_the_moves_the_retried_push_and_the_payment_event(
    played: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, ext_id = played
    code, out, err = _history(capsys, ext_id, "--db", url, "--format", "json")
    assert (code, err) == (0, "")
    [doc] = json.loads(out)
    assert doc["extension"]["id"] == ext_id
    assert (doc["extension"]["status"], doc["extension"]["reason"]) == ("timeout", "safeguard")
    own = [(m["event"], m["by"]) for m in doc["moves"] if m["entity"] == "extension"]
    assert own == [("request", "customer"), ("time_out", "system")]
    others = {(m["entity"], m["from"], m["to"]) for m in doc["moves"] if m["entity"] != "extension"}
    assert others == {
        ("session", "active", "extending"),
        ("session", "extending", "closing"),
        ("payment", "confirmed", "failed"),
    }
    [request] = [d for d in doc["deliveries"] if d["what"] == "extension_request"]
    assert (request["attempts"], request["outcome"], request["push"]) == (1, "delivered", True)
    assert "503" in request["last_error"]
    assert request["delivered_at"] > request["created_at"]  # delivered by the retry, later
    assert all(d["outcome"] == "delivered" for d in doc["deliveries"])
    [payment] = doc["payment_events"]
    assert (payment["what"], payment["outcome"]) == ("payment failed", "delivered")
    assert not any("consumed" in d["what"] for d in doc["payment_events"])


def test_history_table_says_who_moved_and_the_error_of_the_failed_push(
    played: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, ext_id = played
    code, out, err = _history(capsys, ext_id, "--db", url)
    assert (code, err) == (0, "")
    assert out.startswith(f"extension {ext_id}: timeout by the deadline (safeguard)\n")
    lines = out.splitlines()
    timed_out = next(line for line in lines if " time_out " in line)
    assert re.search(
        r"pending\s+timeout\s+time_out\s+system\s+extension_safeguard_tripped", timed_out
    )
    retried = next(line for line in lines if line.split()[1:2] == ["extension_request"])
    assert re.search(
        r"mitra m-3\s+1\s+delivered\s+09:00:02\s+DeliveryError: FCM answered 503", retried
    )
    assert any(re.search(r"payment failed\s+host \(pay-9\)\s+0\s+delivered", x) for x in lines)


def test_history_sequence_is_a_mermaid_diagram_of_the_same_story(
    played: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, ext_id = played
    code, out, err = _history(capsys, ext_id, "--db", url, "--format", "sequence")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "sequenceDiagram"
    body = lines[5:]
    assert body[0].startswith("    C->>S: 09:00:00 request: new → pending")
    assert any("S->>M: extension_request" in x and "1 failed attempt" in x for x in body)
    assert any(x.startswith("    Note over S: 09:01:02 time_out") for x in body)
    assert body[-1].startswith("    S->>H: payment failed")
    assert not any(";" in x for x in body)  # a statement separator would cut a line


def test_history_of_a_session_lists_its_extensions_and_reads_only(
    played: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, ext_id = played

    async def dump() -> object:
        async with await SqlAlchemyStore.open(url) as store:
            return await store.dump()

    before = asyncio.run(dump())
    code, out, err = _history(capsys, "--session", "s-42", "--db", url, "--format", "json")
    assert (code, err) == (0, "")
    assert [d["extension"]["id"] for d in json.loads(out)] == [ext_id]
    assert asyncio.run(dump()) == before


def test_history_of_an_unknown_extension_is_one_line_and_exit_1(
    played: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = played
    code, out, err = _history(capsys, "no-such-extension", "--db", url)
    assert (code, out) == (1, "")
    assert err == "extension-fsm history: no extension found for extension no-such-extension\n"


def test_history_needs_an_extension_or_a_session(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _history(capsys, "--db", "sqlite://")
    assert code == 2 and err.count("\n") == 1 and "EXTENSION_ID or --session" in err


def test_history_help_documents_the_formats(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["history", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for fmt in ("'table'", "'json'", "'sequence'", "Mermaid", "--session SESSION_ID"):
        assert fmt in text


def test_history_example_in_operations_md_is_this_timelines_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    ext_id = asyncio.run(play(url))
    code, out, _ = _history(capsys, ext_id, "--db", url)
    assert code == 0
    page = (ROOT / "docs" / "operations.md").read_text()
    shown = re.search(r"\$ extension-fsm history ext-1\n(.*?)^```", page, re.S | re.M)
    assert shown is not None, "docs/operations.md shows no history example"
    assert shown.group(1) == out


def test_history_of_a_session_keeps_each_extensions_rows_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # two extensions of one session, 2 s apart: a timeout (safeguard), then an accept
    url = f"sqlite:///{tmp_path / 'two.db'}"
    timeline = ROOT / "examples" / "timelines" / "mitra-offline-incident.json"
    assert main(["simulate", str(timeline), "--db", url, "--format", "json"]) == 0
    capsys.readouterr()
    code, out, err = _history(capsys, "--session", "s1", "--db", url, "--format", "json")
    assert (code, err) == (0, "")
    first, second = json.loads(out)
    assert (first["extension"]["status"], second["extension"]["status"]) == ("timeout", "accepted")
    assert [p["what"] for p in first["payment_events"]] == ["payment failed"]
    assert [p["what"] for p in second["payment_events"]] == ["payment consumed"]
    timers = [
        [d["what"] for d in h["deliveries"] if d["kind"] == "session_timer"]
        for h in (first, second)
    ]
    assert timers == [["start_closure_grace"], ["clear_closure_grace", "expiry_extended"]]
    for doc in (first, second):
        ids = {m["id"] for m in doc["moves"] if m["entity"] == "extension"}
        assert ids == {doc["extension"]["id"]}
