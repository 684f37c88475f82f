"""Services failing under a running stream: PostgreSQL stopped, the leading broker killed."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient

from .cluster import LIBS, KafkaCluster, new_cluster_dir
from .conftest import ROOT_DIR
from .test_workers import SIZES, _enrollments_first, _feed_events_in_background

pytestmark = pytest.mark.integration

PG_DATA = Path(__import__("os").environ.get("SERVICES_DIR", ROOT_DIR / ".services")) / "pg" / "data"


def _pg_ctl(*args: str) -> None:
    pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(pg_ctl), "-D", str(PG_DATA), *args], check=True
    )


def _database_answers(url: str) -> bool:
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@pytest.mark.skipif(
    not (PG_DATA / "PG_VERSION").exists(),
    reason="needs the local PostgreSQL of scripts/services.sh",
)
@pytest.mark.parametrize("size", SIZES)
def test_a_database_outage_mid_stream_is_waited_out_and_caught_up(fault_run, size):
    outage = 30 if size == "long" else 8
    run = fault_run(contacts=8000 if size == "long" else 1500)
    worker = run.workers.start()
    _enrollments_first(run)
    feeder = _feed_events_in_background(run)
    time.sleep(1.0)
    _pg_ctl("-m", "fast", "-w", "stop")
    try:
        assert not _database_answers(run.settings.database_url)
        time.sleep(outage)
        lag_during = run.lag()
    finally:
        subprocess.run(
            ["bash", str(ROOT_DIR / "scripts" / "services.sh"), "up"],
            check=True,
            capture_output=True,
        )
    feeder.join(timeout=300)
    run.wait_caught_up(300)

    report = run.check()
    assert report.ok, "\n".join(report.lines())
    assert worker.poll() is None, "the worker must wait out the outage, not exit"
    assert lag_during != 0, "nothing may be committed past effects that are not durable"
    log = (run.workers.logs / "worker-1.log").read_text()
    assert "will retry" in log


def _leading_broker(bootstrap: str, topic_names: list[str]) -> int:
    """The broker that leads the most partitions of ``topic_names``."""

    async def leaders() -> collections.Counter[int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(topic_names)
        finally:
            await admin.close()
        return collections.Counter(p["leader"] for t in described for p in t["partitions"])

    return asyncio.run(leaders()).most_common(1)[0][0]


@pytest.mark.skipif(not LIBS.exists(), reason="needs the Kafka jars of scripts/services.sh")
@pytest.mark.parametrize("size", SIZES)
def test_the_leading_broker_killed_mid_stream_and_restarted_loses_nothing(
    fault_run, tmp_path, size
):
    cluster = KafkaCluster(new_cluster_dir(tmp_path))
    cluster.start_all()
    run = None
    try:
        run = fault_run(
            contacts=8000 if size == "long" else 1500,
            kafka_bootstrap=cluster.bootstrap,
            replication_factor=3,
        )
        run.workers.start()
        run.workers.start()
        _enrollments_first(run)
        leader = _leading_broker(cluster.bootstrap, run.settings.input_topics)
        feeder = _feed_events_in_background(run)
        time.sleep(1.5)
        cluster.kill(leader)
        time.sleep(20 if size == "long" else 8)
        cluster.start(leader)
        cluster.wait_listening([leader])
        feeder.join(timeout=300)
        run.wait_caught_up(300)

        report = run.check()
        assert report.ok, "\n".join(report.lines())
        assert run.workers.crashed() == []
    finally:
        if run is not None:
            run.workers.stop_all()  # before the brokers, so they can leave the group cleanly
        cluster.stop_all()
