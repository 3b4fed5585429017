"""Triton kernels of recon_fast, importable as ``recon_fast.kernels``."""
