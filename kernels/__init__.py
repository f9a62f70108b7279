"""Compiled ops (jax/numpy/scipy only; imports nothing else of ours)."""

from kernels.conv import conv_nd, conv_transpose_nd

__all__ = ["conv_nd", "conv_transpose_nd"]
