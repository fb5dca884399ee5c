"""Random problems and exhaustive energies shared by the proxy tests."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qhybrid.domain.qubo import Ising
from tests.portfolio.factories import all_bits


def random_ising(n: int, seed: int, *, offset: float = 0.7) -> Ising:
    """Fields and couplings of both signs and different sizes."""
    rng = np.random.default_rng(seed)
    return Ising(
        h=rng.normal(size=n) * rng.uniform(0.1, 3.0),
        couplings=np.triu(rng.normal(size=(n, n)), k=1),
        offset=offset,
    )


def energies(ising: Ising) -> NDArray[np.float64]:
    """Energy of every bit vector, row ``k`` of :func:`all_bits` (index ``k``)."""
    return ising.energy_of_bits(all_bits(ising.num_qubits))
