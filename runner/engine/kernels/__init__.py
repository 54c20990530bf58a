"""The kernel machinery: kernels for stages, started plainly or forked from a warmed-up server."""
