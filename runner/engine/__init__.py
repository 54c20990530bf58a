"""The engine: a pipeline's configuration, its stages' execution and what decides them."""
