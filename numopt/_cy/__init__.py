"""Compiled Cython kernels (built by ``setup.py`` from ``src_cython/*.pyx``)."""
