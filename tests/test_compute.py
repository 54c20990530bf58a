"""Large data on a Dask cluster (the `compute` section, runner/nb/compute.py): a LocalCluster of two worker
processes started apart from the runs, as an existing cluster is, and the local one a stage starts itself.

The demo's train stage on the cluster gives the model it trains in one process: LightGBM's data-parallel
learner on two workers, from the same rows and settings, matched the single process to the last digit in
every trial (1e-9 relative allowed below)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import yaml

from runner.nb import compute
from runner.nb.compute import Compute, ComputeError
from tests.conftest import ON_THE_DEMO, checked_run, copy_project, free_port, project_module

pytestmark = pytest.mark.e2e
SAME = 1e-9  # relative: the cluster's model against the single process's


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A cluster that exists before the runs, as a team's would: its scheduler in this process, two
    worker processes."""
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as started:
        yield started


def test_lightgbm_on_the_cluster_trains_the_model_one_process_trains(cluster, tmp_path, monkeypatch):
    forecasting, bench = project_module("notebooks/forecasting.py"), project_module("bench/run_bench.py")
    bench.synthetic_sales(30_000, tmp_path / "sales.csv")  # SYNTHETIC: 11 stores x 20 departments x 143 weeks
    features = forecasting.build_features(forecasting.load_sales(tmp_path, "sales.csv", "none/*.csv"))
    features.to_parquet(tmp_path / "features.parquet", index=False)
    holdout_start = sorted(features["Date"].unique())[-8]
    settings = forecasting.settings(n_estimators=60)

    alone = forecasting.fit(features, settings, before=holdout_start, scored=True)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    where = Compute.of({"above_rows": 10_000})
    assert where.wanted(compute.parquet_rows(tmp_path / "features.parquet")) and not where.wanted(9_999)
    with where.client() as client:
        assert client.scheduler.address == cluster.scheduler_address  # the cluster that was there: no other
        together = forecasting.fit_on_cluster(
            client, tmp_path / "features.parquet", settings, before=holdout_start, scored=True
        )
    holdout = features[features["Date"] >= holdout_start]
    np.testing.assert_allclose(
        together.predict(holdout[forecasting.FEATURES]),
        alone.predict(holdout[forecasting.FEATURES]),
        rtol=SAME,
    )
    np.testing.assert_allclose(
        together.evals_result_["training"]["l1"], alone.evals_result_["training"]["l1"]
    )
    assert together.booster_.current_iteration() == alone.booster_.current_iteration() == 60


def test_a_stage_without_an_address_starts_its_own_cluster_and_ends_it_and_a_dead_address_is_named(
    monkeypatch,
):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    with Compute.of({"above_rows": 0, "workers": 2}).client() as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2 and all(info["host"] == "127.0.0.1" for info in workers.values())
        assert client.submit(sum, [1, 2, 3]).result() == 6
        started = {child.pid for child in psutil.Process().children(recursive=True)} - before
        assert len(started) >= 2  # the worker processes (and their nannies)
    assert not [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]

    monkeypatch.setattr(compute, "CONNECT_TIMEOUT_S", 2)
    monkeypatch.setenv("TEAM_CLUSTER", f"tcp://127.0.0.1:{free_port()}")  # nothing listens there
    unreachable = Compute.of({"above_rows": 0, "scheduler_env": "TEAM_CLUSTER"})
    with pytest.raises(ComputeError, match=r"no Dask scheduler answered at the address in \$TEAM_CLUSTER"):
        unreachable.client().__enter__()


@ON_THE_DEMO
def test_the_demos_notebooks_train_on_a_cluster_given_by_address_as_they_do_in_one_process(
    cluster, demo_first_run, tmp_path, capsys, monkeypatch
):
    """The demo after its first run, its `compute.above_rows` lowered to its own size: the next run trains
    on the cluster at $DASK_SCHEDULER_ADDRESS, with notebooks unchanged, and gets the first run's model."""
    root, result = demo_first_run
    assert result["code"] == 0, result["output"][-3000:]
    root = copy_project(root, tmp_path / "project")
    pipeline = root / "pipeline.yaml"
    spec = yaml.safe_load(pipeline.read_text())
    spec["compute"]["above_rows"] = 500
    pipeline.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    tasks_before = cluster.scheduler.transition_counter

    code, record, out = checked_run(capsys, pipeline, "--no-notify")
    first = min(path for path in (root / "reports").iterdir() if path.name[:1].isdigit())
    first_train = json_of(first / "run.json")["stages"]["train"]["scraps"]
    train = record["stages"]["train"]
    assert code == 0 and train["status"] == "succeeded", out  # not cached: `compute` is part of its key
    assert train["scraps"]["trained_on"] == "dask" and first_train["trained_on"] == "pandas"
    assert train["param_sources"]["compute"] == "injected"
    assert cluster.scheduler.transition_counter > tasks_before  # the work went to that cluster
    assert train["scraps"]["train_wape"] == pytest.approx(first_train["train_wape"], rel=SAME)
    executed = (root / "reports" / record["run_id"] / "train.ipynb").read_text()
    assert (
        os.environ["DASK_SCHEDULER_ADDRESS"] not in executed
    )  # read from the environment, never a parameter


def json_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
