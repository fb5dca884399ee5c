"""QAOA on abstract Ising problems: simulation, angle optimization, circuits, transpilation, QASM."""
