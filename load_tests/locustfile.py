"""Locust scenarios against a running meterwerk server (see README.md in this directory).

- ``ApiPlatformUser``: an API platform charging per call from prepaid credit
  (``POST /v1/record`` before each call; now and then the balance).
- ``VmSessionUser``: VM sessions charged per second, cut off when the credit ends (start,
  heartbeats, stop; the VM tenants are seeded with little credit).
- ``StorageGaugeUser``: storage levels reported as gauge readings (``POST /v1/events``).
- ``BackfillUser``: past usage sent in batches of up to 1,000 events, dated up to six hours
  back within the current month (the tenants' period; earlier periods are closed).

Tenants and their usage keys come from ``METERWERK_SEED_FILE`` (``loadtest.json`` written by
``python -m load_tests.seed``; default ``./data/loadtest.json``), or from
``METERWERK_TENANTS`` (comma-separated) with one ``METERWERK_KEY`` that may act for all of
them (an admin key, or the usage key of their tree). The server is ``--host`` or
``METERWERK_URL``. A refusal that is a correct answer (``insufficient_credit`` when a prepaid
balance is spent, a cut-off session) counts as a success under a name of its own; anything
else unexpected is a failure.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import gevent
from locust import FastHttpUser, between, task

RUN: Final = uuid.uuid4().hex[:10]
"""Ids are ``<run>-<n>``: fresh per request in this process, and across runs."""
BACKFILL_BATCH: Final = min(1_000, int(os.environ.get("METERWERK_BACKFILL_BATCH", "1000")))
BACKFILL_SECONDS_MAX: Final = 6 * 3_600
"""How far back backfilled usage goes at most, and never before the current month: the load
tariffs bill monthly in UTC, and usage in a closed period is refused as ``event_too_late``."""
HEARTBEATS_MAX: Final = 20
RETRIES_MAX: Final = 5
RETRY_AFTER_MAX_SECONDS: Final = 5.0
OUT_OF_CREDIT: Final = frozenset({"insufficient_credit", "account_cut_off"})
_SUMMARY: Final = re.compile(rb'^\{"accepted":(\d+),"refused":(\d+)')
_ids = itertools.count()
_placements = itertools.count()


def fresh_id() -> str:
    return f"{RUN}-{next(_ids)}"


def _load_accounts() -> dict[str, list[dict[str, str]]]:
    tenants = os.environ.get("METERWERK_TENANTS")
    if tenants:
        key = os.environ["METERWERK_KEY"]
        listed = [{"tenant": t.strip(), "key": key} for t in tenants.split(",") if t.strip()]
        return {scenario: listed for scenario in ("api", "vm", "storage", "backfill")}
    path = Path(os.environ.get("METERWERK_SEED_FILE", "./data/loadtest.json"))
    if not path.exists():
        return {}
    scenarios: dict[str, list[dict[str, str]]] = json.loads(path.read_bytes())["scenarios"]
    return scenarios


def _month_start(now: int) -> int:
    day = datetime.fromtimestamp(now, UTC)
    return int(day.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())


ACCOUNTS: Final = _load_accounts()


class _MeterwerkUser(FastHttpUser):
    abstract = True
    host = os.environ.get("METERWERK_URL", "http://127.0.0.1:8080")
    scenario = ""

    def on_start(self) -> None:
        accounts = ACCOUNTS.get(self.scenario)
        if not accounts:
            raise RuntimeError(
                f"no {self.scenario} tenants: run python -m load_tests.seed and set "
                "METERWERK_SEED_FILE, or set METERWERK_TENANTS and METERWERK_KEY"
            )
        # Users are spread over the tenants in turn, so that every tenant gets load.
        account = accounts[next(_placements) % len(accounts)]
        self.tenant = account["tenant"]
        self.headers = {"Authorization": f"Bearer {account['key']}"}

    def post_decision(self, path: str, body: dict[str, Any], name: str) -> dict[str, Any] | None:
        """POST a command; its decision (also a refusal) or None for an error, counted as a
        failure unless it is 404 ``unknown_session`` (a session the account has ended)."""
        with self.client.post(
            path, json=body, headers=self.headers, name=name, catch_response=True
        ) as answer:
            if answer.status_code == 200:
                decision: dict[str, Any] = answer.json()
                answer.success()
                return decision
            if answer.status_code == 404 and b"unknown_session" in (answer.content or b""):
                answer.success()
                return {"accepted": False, "reason": "unknown_session"}
            answer.failure(f"{answer.status_code}: {answer.text}")
            return None


class ApiPlatformUser(_MeterwerkUser):
    """An application that asks before every metered API call."""

    scenario = "api"
    wait_time = between(0.0, 0.05)

    @task(20)
    def call(self) -> None:
        body = {"id": fresh_id(), "tenant": self.tenant, "meter": "api_calls"}
        decision = self.post_decision("/v1/record", body, "/v1/record")
        if decision is not None and not decision["accepted"]:
            _refusal(self, "/v1/record", decision, OUT_OF_CREDIT)

    @task(1)
    def balance(self) -> None:
        self.client.get(
            f"/v1/tenants/{self.tenant}/balance",
            headers=self.headers,
            name="/v1/tenants/[tenant]/balance",
        )


class VmSessionUser(_MeterwerkUser):
    """A VM: a session per boot, heartbeats while it runs, stopped or cut off."""

    scenario = "vm"
    wait_time = between(0.5, 2.0)

    @task
    def run_vm(self) -> None:
        session = fresh_id()
        start = {
            "id": fresh_id(),
            "tenant": self.tenant,
            "session": session,
            "meter": "vm_seconds",
            "quantity": random.randint(1, 4),
        }
        decision = self.post_decision("/v1/sessions/start", start, "/v1/sessions/start")
        if decision is None or not decision["accepted"]:
            if decision is not None:
                _refusal(self, "/v1/sessions/start", decision, OUT_OF_CREDIT)
            return
        for _ in range(random.randint(2, HEARTBEATS_MAX)):
            gevent.sleep(random.uniform(0.5, 1.5))
            beat = {"id": fresh_id(), "tenant": self.tenant, "session": session}
            decision = self.post_decision("/v1/sessions/heartbeat", beat, "/v1/sessions/heartbeat")
            if decision is None:
                return
            if not decision["accepted"]:
                expected = OUT_OF_CREDIT | {"unknown_session"}
                _refusal(self, "/v1/sessions/heartbeat", decision, expected)
                return
        stop = {"id": fresh_id(), "tenant": self.tenant, "session": session}
        decision = self.post_decision("/v1/sessions/stop", stop, "/v1/sessions/stop")
        if decision is not None and not decision["accepted"]:
            _refusal(self, "/v1/sessions/stop", decision, {"unknown_session"})


class StorageGaugeUser(_MeterwerkUser):
    """A storage service reporting how much each tenant holds (a time-weighted gauge)."""

    scenario = "storage"
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        super().on_start()
        self.level_gb = random.randint(1, 1_000)

    @task
    def report(self) -> None:
        self.level_gb = max(0, self.level_gb + random.randint(-50, 100))
        event = {
            "id": fresh_id(),
            "tenant": self.tenant,
            "meter": "storage_gb",
            "quantity": self.level_gb,
        }
        _post_events(self, [event], "/v1/events (gauge)")


class BackfillUser(_MeterwerkUser):
    """An importer sending usage that already happened, in batches, dated in the past."""

    scenario = "backfill"
    wait_time = between(0.0, 0.5)

    @task
    def backfill(self) -> None:
        now = int(time.time())
        earliest = max(_month_start(now), now - BACKFILL_SECONDS_MAX)
        events = [
            {
                "id": fresh_id(),
                "tenant": self.tenant,
                "meter": "backfill_events",
                "usage_time": random.randint(earliest, now),
            }
            for _ in range(BACKFILL_BATCH)
        ]
        _post_events(self, events, "/v1/events (backfill)")


def _refusal(
    user: _MeterwerkUser, name: str, decision: dict[str, Any], expected: set[str] | frozenset[str]
) -> None:
    """A refusal the scenario expects is counted under its reason; any other is a failure."""
    reason = str(decision.get("reason"))
    user.environment.events.request.fire(
        request_type="REFUSED",
        name=f"{name} {reason}",
        response_time=0,
        response_length=0,
        exception=None if reason in expected else RuntimeError(f"refused: {decision}"),
        context={},
    )


def _post_events(user: _MeterwerkUser, events: list[dict[str, Any]], name: str) -> None:
    """Every event must be accepted; the summary is read without decoding the results. A 429
    (the host's queue is full) is the server protecting itself: the batch is sent again, with
    the same ids, after ``Retry-After``, as an importer should."""
    for _ in range(RETRIES_MAX):
        with user.client.post(
            "/v1/events",
            json={"events": events},
            headers=user.headers,
            name=name,
            catch_response=True,
        ) as answer:
            if answer.status_code == 429:
                answer.success()
                _refusal(
                    user, name, {"reason": "host_busy (sent again)"}, {"host_busy (sent again)"}
                )
                retry_after = float(answer.headers.get("Retry-After") or 1)
                gevent.sleep(min(RETRY_AFTER_MAX_SECONDS, retry_after))
                continue
            found = _SUMMARY.match(answer.content or b"") if answer.status_code == 200 else None
            if found is None:
                answer.failure(f"{answer.status_code}: {(answer.text or '')[:300]}")
            elif int(found[2]):
                refused = int(found[2])
                answer.failure(f"{refused} of {len(events)} events refused: {answer.text[:300]}")
            else:
                answer.success()
            return
    _refusal(user, name, {"reason": f"host_busy {RETRIES_MAX} times"}, set())
