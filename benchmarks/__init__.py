"""Benchmarks (installed as ``manet_edge.benchmarks``): latency, operation counts, reports.

The core package never imports this one; it may import torch and the runtimes freely.
"""
