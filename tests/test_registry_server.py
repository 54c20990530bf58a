"""The team option: an MLflow tracking server whose artifacts live in an S3-compatible store.

For real, on 127.0.0.1: moto's S3 server, `mlflow server --artifacts-destination s3://...` on it, and the
toy project. Its embedded store is migrated to the server (`retrain registry migrate`, checked), then a full
run against the server registers, promotes and smoke-checks a new version (artifacts through the server to
S3), `retrain rollback` brings the migrated version back, and the champion loads from the server.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import S3Server, ToyOrigin, clone_toy, job_environment, retrain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]  # a loaded 2-core machine: minutes


LOAD = (
    "import mlflow.pyfunc, pandas;"
    "print(mlflow.pyfunc.load_model('models:/toy@champion').predict(pandas.DataFrame({'x': [10]}))[0])"
)


def test_migrate_run_promote_roll_back_and_load_on_a_server_with_s3_artifacts(
    toy_origin: ToyOrigin, s3_mlflow_server: S3Server
) -> None:
    server = s3_mlflow_server
    project = clone_toy(toy_origin, "team")
    embedded = retrain(project, "run", "toy.yaml")
    assert embedded.returncode == 0, embedded.stdout[-3000:] + embedded.stderr[-3000:]

    migrated = retrain(project, "registry", "migrate", "toy.yaml", "--to", server.url)
    said = migrated.stdout + migrated.stderr
    assert migrated.returncode == 0, said[-3000:]
    assert "copied 1 run(s), 1 logged model(s), 1 version(s), 2 alias(es)" in said
    assert "checked: every version, tag, alias and run metric is the same" in said
    again = retrain(project, "registry", "migrate", "toy.yaml", "--to", server.url)
    assert again.returncode == 0 and "(3 already there)" in again.stdout  # a rerun copies nothing twice

    env = {"MLFLOW_TRACKING_URI": server.url}
    run = retrain(project, "run", "toy.yaml", "-p", "factor=2.01", env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    model = json.loads((project / "reports" / run.outputs["run_id"] / "run.json").read_text())["model"]
    assert (model["version"], model["promoted"], model["smoke_check"]["passed"]) == ("2", True, True)
    assert "40 predictions match" in model["smoke_check"]["detail"]
    listed = retrain(project, "models", "toy.yaml", env=env)
    assert listed.returncode == 0 and server.url in listed.stdout

    rolled = retrain(project, "rollback", "toy.yaml", env=env)
    assert rolled.returncode == 0, rolled.stderr[-2000:]
    assert "version 1 is the champion of toy again (was 2)" in rolled.stdout
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD],
        cwd=project,
        env={**job_environment(project), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert float(loaded.stdout.split()[-1]) == pytest.approx(20.0)  # the migrated v1: y = 2.0 * x

    promoted = retrain(project, "promote", "2", "toy.yaml", env=env)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert "version 2 is now the champion of toy (was 1); smoke check passed" in promoted.stdout
    models = [key for key in server.objects() if key.endswith("/MLmodel")]
    assert len(models) == 2, server.objects()  # both versions' files are in the bucket, none on this disk
