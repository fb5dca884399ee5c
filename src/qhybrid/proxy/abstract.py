"""From a labelled business problem's QUBO to the abstract Ising problem the quantum side sees.

This is the seam where obfuscation plugs in: the transforms (permutation, gauge, scaling, decoys,
noise) and their per-job secret key live here, and the key never leaves the trusted zone. Today
the transform is the identity on numbers; labels never enter a :class:`~qhybrid.core.qubo.Qubo`.
"""

from __future__ import annotations

from qhybrid.core.qubo import Ising, Qubo


def abstract_problem(qubo: Qubo) -> Ising:
    """The Ising problem to send out for ``qubo``; its variable ``i`` is the QUBO's variable ``i``."""
    return qubo.to_ising()
