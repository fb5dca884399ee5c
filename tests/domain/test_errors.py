"""Every error a worker can meet is permanent or transient by its type, decided where it is defined."""

from __future__ import annotations

import pytest

from qhybrid.backends.base import PermanentBackendError, TransientBackendError
from qhybrid.domain.errors import PermanentError, TransientError
from qhybrid.jobs.journey import PERMANENT_ERRORS, TRANSIENT_ERRORS
from qhybrid.proxy.keys import KeyVaultError
from qhybrid.quantum.circuit import CircuitTooLargeError, UnsupportedTargetError


@pytest.mark.parametrize(
    "error", [PermanentBackendError, CircuitTooLargeError, UnsupportedTargetError, KeyVaultError]
)
def test_failures_that_waiting_cannot_fix_are_permanent(error: type[Exception]) -> None:
    assert issubclass(error, PermanentError)
    assert issubclass(error, PERMANENT_ERRORS)
    assert not issubclass(error, TRANSIENT_ERRORS)


def test_provider_outages_are_transient_and_keep_their_advice() -> None:
    error = TransientBackendError("429", retry_after=7.0)
    assert isinstance(error, TransientError) and isinstance(error, TRANSIENT_ERRORS)
    assert error.retry_after == 7.0
