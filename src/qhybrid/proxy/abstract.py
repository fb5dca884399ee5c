"""From a labelled business problem's QUBO to the abstract Ising problem the quantum side sees.

Labels never enter a :class:`~qhybrid.core.qubo.Qubo`, so this step only changes the algebra;
the obfuscation of the numbers (:func:`qhybrid.proxy.obfuscation.obfuscate`) is applied to its
result under the job's secret key.
"""

from __future__ import annotations

from qhybrid.core.qubo import Ising, Qubo


def abstract_problem(qubo: Qubo) -> Ising:
    """The Ising problem to send out for ``qubo``; its variable ``i`` is the QUBO's variable ``i``."""
    return qubo.to_ising()
