"""`meterwerk demo`: the demo tree answers as the printed walk-through says, and seeding it
again changes nothing."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterwerk.demo import DEMO_TENANT, SHOP_A, SHOP_B, seed
from meterwerk.serve import ServeOptions, Server
from tests.gateway.conftest import headers, in_process_client

pytestmark = pytest.mark.anyio


async def test_the_demo_tree_works_and_seeding_twice_changes_nothing(
    ray_cluster: Any, tmp_path: Path
) -> None:
    options = ServeOptions(data_dir=str(tmp_path / "data"), hosts=1)
    server = Server(options, prefix=f"demo-{uuid.uuid4().hex[:6]}", keep_hosts=False)
    server.start()
    try:
        key = seed(server.hosts, server.config.sql_url)
        async with in_process_client(server.app()) as client:

            async def balances() -> list[Decimal]:
                found = []
                for tenant in (DEMO_TENANT, SHOP_A, SHOP_B):
                    answer = await client.get(f"/v1/tenants/{tenant}/balance", headers=headers(key))
                    assert answer.status_code == 200, answer.text
                    found.append(Decimal(answer.json()["balance"]))
                return found

            first = await balances()
            seed(server.hosts, server.config.sql_url)
            assert await balances() == first
            record = await client.post(
                "/v1/record",
                json={"id": "walkthrough-1", "tenant": SHOP_A, "meter": "sms"},
                headers=headers(key),
            )
        root, shop_a, shop_b = first
        # 20.00 EUR less the root's and the pooled shop's SMS; shop B pays its own from 3.00.
        assert Decimal(0) < root < Decimal(20) and root == shop_a
        assert Decimal(0) < shop_b < Decimal(3)
        assert record.status_code == 200 and record.json()["accepted"] is True, record.text
    finally:
        server.stop()
