"""Shared kernel: configuration, logging, and the label-free QUBO/Ising vocabulary."""
