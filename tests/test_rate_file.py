"""``meterwerk rate``: the example files rate to the totals the guide states, and bad input
gives ``error: <message>`` and exit status 2."""

from __future__ import annotations

import json
import re
import shlex
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.instants import parse
from engine.tariffs import decode_catalog
from meterwerk.cli import main
from meterwerk.rate_file import PERIODS_MAX, decode_events, rate_events, rate_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
CATALOG = str(EXAMPLES / "catalog.json")


def _write(path: Path, document: Any) -> str:
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def _calls(count: int, day: str = "2024-03-05") -> list[dict[str, Any]]:
    return [
        {"id": f"c{number}", "meter": "api_calls", "time": f"{day}T10:00:00Z"}
        for number in range(count)
    ]


def _totals(output: str) -> list[str]:
    return re.findall(r"^ +total +[A-Z]{3} +(\S+)$", output, re.M)


def test_the_example_events_rate_as_the_guide_shows(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    guide = (ROOT / "docs" / "tariffs.md").read_text(encoding="utf-8")
    shown = re.findall(r"```text\n\$ (meterwerk rate [^\n]*)\n(.*?)```", guide, re.S)
    assert shown, "the guide shows at least one run of meterwerk rate"
    monkeypatch.chdir(ROOT)
    for command, output in shown:
        assert main(shlex.split(command)[1:]) == 0
        captured = capsys.readouterr()
        assert captured.out == output, command
        assert captured.err == ""


@pytest.mark.parametrize(
    ("tariff", "events", "total"),
    [
        ("api-plan", "events.json", ["29.00", "29.00"]),
        ("cloud", "events-cloud.json", ["7.70"]),
        ("telecom-payg", "events-telecom-payg.json", ["4.50"]),
        ("energy", "events-energy.json", ["15.70"]),
        ("saas", "events-saas.json", ["40.00"]),
    ],
)
def test_every_tariff_of_the_example_catalog(
    tariff: str, events: str, total: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert rate_file(CATALOG, tariff, str(EXAMPLES / events), "UTC") == 0
    assert _totals(capsys.readouterr().out) == total


def test_the_energy_tariff_lays_out_its_periods_in_its_own_zone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rate_file(CATALOG, "energy", str(EXAMPLES / "events-energy.json"), "Asia/Tokyo")
    out = capsys.readouterr().out
    assert "period 2024-03-01T00:00:00+01:00 to 2024-04-01T00:00:00+02:00 (Europe/Berlin)" in out


def test_calls_above_the_included_10000_cost_0_002_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _write(tmp_path / "events.json", _calls(10_250))
    assert rate_file(CATALOG, "api-plan", events, "UTC") == 0
    out = capsys.readouterr().out
    assert re.search(r"^calls/overage .* 250 call +0\.002 +0\.50$", out, re.M)
    assert _totals(out) == ["29.50"]


def test_a_version_applies_from_the_first_period_after_it_takes_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = json.loads((EXAMPLES / "catalog-minimal.json").read_text(encoding="utf-8"))
    catalog["tariffs"] = [json.loads((EXAMPLES / "tariff-versions.json").read_text("utf-8"))]
    july = {"id": "july", "meter": "api_calls", "time": "2024-07-02T00:00:00Z"}
    events = [*_calls(1, "2024-06-20"), july]
    code = rate_file(
        _write(tmp_path / "catalog.json", catalog),
        "api-plan",
        _write(tmp_path / "events.json", events),
        "UTC",
    )
    assert code == 0
    out = capsys.readouterr().out
    assert re.findall(r"^api-plan version (\d)", out, re.M) == ["1", "2"]
    assert _totals(out) == ["29.00", "35.00"]


def test_periods_without_events_are_closed_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _calls(1, "2024-03-05") + _calls(1, "2024-06-05")
    events[1]["id"] = "june"
    assert rate_file(CATALOG, "api-plan", _write(tmp_path / "e.json", events), "UTC") == 0
    out = capsys.readouterr().out
    assert _totals(out) == ["29.00"] * 4
    assert out.endswith("4 periods, total EUR 116.00\n")


def test_a_gauge_carries_over_into_the_next_period() -> None:
    catalog = decode_catalog((EXAMPLES / "catalog.json").read_bytes())
    events = decode_events(
        json.dumps(
            [
                {
                    "id": "s",
                    "meter": "storage_gb",
                    "time": "2024-03-11T00:00:00Z",
                    "quantity": "100",
                },
                {"id": "c", "meter": "cpu", "time": "2024-04-20T00:00:00Z"},
            ]
        )
    )
    outcome = rate_events(catalog.tariff("cloud"), catalog.meters_by_key(), events, "UTC")
    march, april = (period.statement for period in outcome.periods)
    # 100 GB for 21 days of March, then all 30 days of April, at 0.0003 per GB-day.
    assert march.line("storage/units").amount == Decimal("0.63")
    assert april.line("storage/units").quantity == 3_000
    assert april.line("storage/units").amount == Decimal("0.90")


def test_a_first_version_that_starts_in_mid_period_prorates_its_first_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The version takes effect at midnight UTC, an hour into the tenant's January.
    events = [
        {"id": "early", "meter": "api_calls", "time": "2023-12-31T23:30:00Z"},
        {"id": "later", "meter": "api_calls", "time": "2024-01-03T00:00:00Z"},
    ]
    path = _write(tmp_path / "events.json", events)
    assert rate_file(CATALOG, "api-plan", path, "Europe/Berlin") == 1
    captured = capsys.readouterr()
    assert "prorated 2674800 s of 2678400 s" in captured.out
    assert _totals(captured.out) == ["28.96"]  # 29.00 for 743 of 744 hours
    assert captured.err.startswith("rejected: event 'early': no_version_in_effect at time:")


def test_a_retry_is_rated_once_and_a_reused_id_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _calls(2)
    events.append(dict(events[0]))
    events.append({**events[1], "time": "2024-03-06T10:00:00Z"})
    assert rate_file(CATALOG, "api-plan", _write(tmp_path / "e.json", events), "UTC") == 1
    captured = capsys.readouterr()
    assert re.search(r"^calls/included .* 2 call", captured.out, re.M)
    assert captured.err == (
        "rejected: event 'c1': event_id_reused at id: "
        "id 'c1' was used before for a different event\n"
    )


def test_an_event_that_cannot_be_rated_is_listed_and_the_status_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [*_calls(1), {"id": "x", "meter": "fax_pages", "time": "2024-03-06T00:00:00Z"}]
    assert rate_file(CATALOG, "api-plan", _write(tmp_path / "e.json", events), "UTC") == 1
    captured = capsys.readouterr()
    assert _totals(captured.out) == ["29.00"]
    assert captured.err == "rejected: event 'x': unknown_meter at meter: no meter 'fax_pages'\n"


def test_events_are_rated_in_time_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = [
        {"id": "april", "meter": "api_calls", "time": "2024-04-02T00:00:00Z"},
        {"id": "march", "meter": "api_calls", "time": "2024-03-02T00:00:00Z"},
    ]
    assert rate_file(CATALOG, "api-plan", _write(tmp_path / "e.json", events), "UTC") == 0
    out = capsys.readouterr().out
    assert re.findall(r"period (\S+) to", out) == [
        "2024-03-01T00:00:00+00:00",
        "2024-04-01T00:00:00+00:00",
    ]


def test_epoch_seconds_and_rfc3339_name_the_same_instant() -> None:
    [text, number] = decode_events(
        json.dumps(
            [
                {"id": "a", "meter": "api_calls", "time": "2024-03-31T02:00:00+02:00"},
                {"id": "b", "meter": "api_calls", "time": 1711843200},
            ]
        )
    )
    assert text.time == number.time == parse("2024-03-31T00:00:00Z")


def test_no_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rate_file(CATALOG, "api-plan", _write(tmp_path / "e.json", []), "UTC") == 0
    assert capsys.readouterr().out == "no events: nothing to rate\n"


def _bad_event(**fields: Any) -> list[dict[str, Any]]:
    return [{"id": "e1", "meter": "api_calls", "time": "2024-03-05T10:00:00Z", **fields}]


@pytest.mark.parametrize(
    ("catalog", "tariff", "events", "time_zone", "message"),
    [
        (
            "invalid-catalog-meter.json",
            "starter",
            _calls(1),
            "UTC",
            "invalid-catalog-meter.json: tariffs[0].versions[0].charges[0].meter: "
            "unknown meter 'api_cals'",
        ),
        (None, "api-plans", _calls(1), "UTC", "no tariff 'api-plans' (tariffs: api-plan, cloud"),
        (None, "api-plan", _calls(1), "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        (
            None,
            "api-plan",
            _bad_event(time="2024-03-05T10:00:00"),
            "UTC",
            "time: '2024-03-05T10:00:00' is not an RFC 3339 time with an offset",
        ),
        (None, "api-plan", _bad_event(time=1.5), "UTC", "at `$[0].time`"),
        (None, "api-plan", _bad_event(time=-1), "UTC", "at `$[0].time`"),
        (None, "api-plan", _bad_event(quantity="0." + "1" * 10), "UTC", "quantity: at most 9"),
        (None, "api-plan", _bad_event(duration=60), "UTC", "unknown field `duration`"),
        (None, "api-plan", {"id": "e1"}, "UTC", "Expected `array`, got `object`"),
    ],
)
def test_invalid_input_says_error_and_exits_with_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    catalog: str | None,
    tariff: str,
    events: Any,
    time_zone: str,
    message: str,
) -> None:
    catalog_path = CATALOG if catalog is None else str(EXAMPLES / catalog)
    events_path = _write(tmp_path / "events.json", events)
    assert rate_file(catalog_path, tariff, events_path, time_zone) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert message in captured.err


def test_a_missing_or_malformed_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.json")
    assert rate_file(CATALOG, "api-plan", missing, "UTC") == 2
    assert capsys.readouterr().err == f"error: {missing}: No such file or directory\n"
    malformed = tmp_path / "malformed.json"
    malformed.write_text("[{", encoding="utf-8")
    assert rate_file(CATALOG, "api-plan", str(malformed), "UTC") == 2
    assert capsys.readouterr().err.startswith(f"error: {malformed}: ")


def test_a_file_may_span_at_most_periods_max_periods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    year = 2024 + PERIODS_MAX // 12 + 1
    far = {"id": "far", "meter": "api_calls", "time": f"{year}-03-05T00:00:00Z"}
    events = [*_calls(1, "2024-03-05"), far]
    assert rate_file(CATALOG, "api-plan", _write(tmp_path / "e.json", events), "UTC") == 2
    assert f"more than {PERIODS_MAX} periods" in capsys.readouterr().err
