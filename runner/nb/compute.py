"""Large data on a Dask cluster, for the stage notebooks that declare `compute`.

    compute = {}                                   # parameters cell: the runner injects the `compute` section
    where = nb.compute.Compute.of(compute)
    with where.client_for(nb.compute.parquet_rows(path)) as client:   # None below `above_rows`
        ...                                   # client: the cluster at $DASK_SCHEDULER_ADDRESS, or a local one

Below the size, or without a `compute` section, a notebook stays in pandas: a cluster costs seconds to start
and the data's trip to its workers, which pays only on data that one process holds with difficulty. The
scheduler's address is read from the environment (a workflow's secret), never passed as a parameter, so it
is not written into the executed notebook. `dask` and `distributed` are imported when a client is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

CONNECT_TIMEOUT_S = 30  # an address that does not answer: the stage fails with the variable's name


class ComputeError(RuntimeError):
    """The cluster named by the environment cannot be reached."""


@dataclass(frozen=True)
class Compute:
    """Where a stage computes: `above_rows` None means pandas whatever the size (no `compute` section)."""

    above_rows: int | None = None
    scheduler_env: str = "DASK_SCHEDULER_ADDRESS"
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"

    @classmethod
    def of(cls, settings: Mapping[str, Any] | None) -> Compute:
        """From the injected `compute` parameter ({} or None: no cluster)."""
        if not settings:
            return cls()
        return cls(**{field.name: settings[field.name] for field in fields(cls) if field.name in settings})

    def wanted(self, rows: int) -> bool:
        """Whether data of `rows` rows is computed on the cluster."""
        return self.above_rows is not None and rows >= self.above_rows

    def client_for(self, rows: int) -> AbstractContextManager[Any]:
        """`client()` when data of `rows` rows is computed on the cluster (`wanted`), else a block that gives
        None: `with where.client_for(rows) as client:` then one code path for both."""
        return self.client() if self.wanted(rows) else nullcontext()

    @property
    def address(self) -> str:
        """The scheduler of an existing cluster, from the environment; "" when a local one is started."""
        return os.environ.get(self.scheduler_env, "").strip()

    @contextmanager
    def client(self) -> Iterator[Any]:
        """A `distributed.Client` for the block: connected to the scheduler at `address`, or to a
        LocalCluster of `workers` processes on 127.0.0.1 that ends with the block (and with the kernel: its
        workers are the kernel's children, in its process group)."""
        from dask.distributed import Client, LocalCluster

        if self.address:
            try:
                client = Client(self.address, timeout=CONNECT_TIMEOUT_S)
            except OSError as error:
                raise ComputeError(
                    f"no Dask scheduler answered at the address in ${self.scheduler_env} within "
                    f"{CONNECT_TIMEOUT_S} s ({error}): check the address, or unset {self.scheduler_env} to "
                    "compute on a local cluster"
                ) from None
            with client:
                yield client
            return
        cluster = LocalCluster(
            n_workers=self.workers,
            threads_per_worker=self.threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # its web server on a free port: never the port of another cluster
            memory_limit=self.memory_limit,
        )
        with cluster, Client(cluster) as client:
            yield client


def parquet_rows(path: Path | str) -> int:
    """The rows of a Parquet file or folder of files, from their footers: nothing is loaded."""
    import pyarrow.parquet as pq

    folder = Path(path)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else [folder]
    return sum(pq.ParquetFile(file).metadata.num_rows for file in files)
