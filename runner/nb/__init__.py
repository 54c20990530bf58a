"""The notebook library: what stage notebooks import."""
