"""The model's way to production: the registry, the release of a version, monitoring."""
