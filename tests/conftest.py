"""One session-scoped local SparkSession for the whole test run (local[2], few shuffle partitions)."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


@pytest.fixture(scope="session")
def spark():
    from jobs.session import get_spark

    s = get_spark("lmrefinery-tests", master="local[2]", conf={
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "4",
        "spark.ui.enabled": "false",
        "spark.driver.memory": "2g",
    })
    yield s
    s.stop()


@pytest.fixture
def lake_dir(tmp_path):
    return str(tmp_path / "lake")


@pytest.fixture
def lake(spark, lake_dir):
    from jobs.tables import Lake

    return Lake(spark, lake_dir)
