"""The program PREPARING produces: the only thing that crosses the boundary, and what stays inside."""

from __future__ import annotations

from dataclasses import dataclass

from qhybrid.domain.result import Prepared


@dataclass(frozen=True)
class Program:
    """A compiled circuit for one device.

    Attributes:
        text: Restricted OpenQASM 3 (:mod:`qhybrid.quantum.qasm`): with the shot count and an opaque
            token, all that is sent to the provider.
        prepared: What was sent and how it was built, kept in the trusted zone (never sent).
    """

    text: str
    prepared: Prepared
