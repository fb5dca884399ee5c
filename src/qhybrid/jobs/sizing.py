"""Which jobs are decomposed, and how large their sub-problems are (light: the API imports it).

A selection whose qubits (decoys included) exceed ``QHYBRID_MAX_QUBITS`` or the device's is solved
by decomposition (:mod:`qhybrid.jobs.subproblems`); every sub-problem, decoys included, fits in
``QHYBRID_SUBPROBLEM_QUBITS`` capped by ``QHYBRID_MAX_QUBITS`` and the device. Other formulations
keep the single-program limits.
"""

from __future__ import annotations

from qhybrid.core.config import Settings
from qhybrid.domain.privacy import PrivacyLevel
from qhybrid.domain.request import JobRequest
from qhybrid.proxy.obfuscation import decoy_count


def _level(request: JobRequest, settings: Settings) -> PrivacyLevel:
    return request.privacy or settings.privacy_default


def device_qubits(settings: Settings, capacity: int | None) -> int:
    """Qubits one program may use: ``QHYBRID_MAX_QUBITS``, capped by the device when known."""
    return settings.max_qubits if capacity is None else min(settings.max_qubits, capacity)


def is_decomposed(request: JobRequest, settings: Settings, capacity: int | None) -> bool:
    """Whether a request is solved by decomposition: a selection too large for one program."""
    if request.formulation != "selection":
        return False
    qubits = request.num_qubits()
    return qubits + decoy_count(_level(request, settings), qubits) > device_qubits(settings, capacity)


def subproblem_qubits(settings: Settings, capacity: int | None) -> int:
    """Qubits of each sub-problem: ``QHYBRID_SUBPROBLEM_QUBITS``, capped by the single-program limit."""
    return min(settings.subproblem_qubits, device_qubits(settings, capacity))


def subproblem_assets(qubits: int, request: JobRequest, settings: Settings) -> int:
    """The most free assets a sub-problem may have so that it and its decoys fit in ``qubits``.

    Returns:
        0 when not even two assets fit.
    """
    level = _level(request, settings)
    for assets in range(qubits, 1, -1):
        if assets + decoy_count(level, assets) <= qubits:
            return assets
    return 0
