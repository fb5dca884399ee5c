"""The bottom layer: the typed job contract and the label-free mathematics, shared by every zone.

Nothing here imports anything else from qhybrid, and importing a submodule loads only what that
submodule needs (the settings import :mod:`qhybrid.domain.privacy` and
:mod:`qhybrid.domain.device` without loading numpy).

| module | holds |
|---|---|
| :mod:`~qhybrid.domain.request` | ``JobRequest``: what a client asks for, with its defaults written once |
| :mod:`~qhybrid.domain.result` | ``JobResult`` and its parts: what a completed job answers |
| :mod:`~qhybrid.domain.states` | ``JobState`` (the journey), ``TaskState`` (a provider task), named sets |
| :mod:`~qhybrid.domain.program` | ``Program``: the circuit that crosses the boundary, and its facts |
| :mod:`~qhybrid.domain.device` | ``DeviceTarget`` and ``Pricing``: what a QPU offers and costs |
| :mod:`~qhybrid.domain.privacy` | ``PrivacyLevel`` |
| :mod:`~qhybrid.domain.errors` | ``PermanentError`` / ``TransientError``: how a failure is handled |
| :mod:`~qhybrid.domain.qubo` | ``Qubo`` and ``Ising``: numbers only, no labels |
"""
