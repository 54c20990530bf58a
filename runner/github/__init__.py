"""GitHub Actions: what a workflow run does for its event, its comment, the state between runs, Pages."""
