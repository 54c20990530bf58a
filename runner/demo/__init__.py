"""The bundled demo's data and replay."""
