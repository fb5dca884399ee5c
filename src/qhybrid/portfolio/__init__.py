"""The finance model (trusted zone): portfolios, Markowitz → QUBO, classical solvers, evaluation."""
