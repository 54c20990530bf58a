"""GitHub Actions: what a workflow run does for its event, its pull request's comment, the state kept on
branches between runs, the Pages site."""

# Orphan branches of the repository that keep what a hosted runner throws away after each job
STATE_BRANCH = "retrain-state"  # the embedded MLflow store (mlruns/)
MONITORING_BRANCH = "retrain-monitoring"  # the monitoring log's folder: apart from the registry (actions.py)
PAGES_BRANCH = "retrain-pages"  # the published pages (pages.py)
