"""A DocDB connection lost in the middle of an operation surfaces as the platform's DocDBError
naming host and database, never as a raw pymongo error."""

from __future__ import annotations

import re

import pytest

from aind_assets.resources.docdb import DocDBError
from aind_assets_tests.faults.conftest import FaultServers
from aind_assets_tests.faults.flows import Env


def test_a_connection_lost_mid_cursor_is_a_docdb_error(
    fault_servers: FaultServers, env: Env
) -> None:
    env.docdb.bulk_upsert("items", [{"_id": i} for i in range(5)])
    cursor = env.docdb.find("items", {}, batch_size=1)
    assert next(cursor) == {"_id": 0}
    fault_servers.mongo.kill()
    where = f"DocDB at 127.0.0.1:{fault_servers.mongo.port} (database {env.docdb.database!r})"
    with pytest.raises(DocDBError, match=re.escape(f"Lost the connection to {where}")):
        list(cursor)
    with pytest.raises(DocDBError, match=r"Cannot reach DocDB at 127\.0\.0\.1"):
        env.docdb.upsert("items", {"_id": 9}, {"_id": 9})
    fault_servers.restart("mongo")
    assert env.docdb.count("items") == 5  # the data survived the kill
