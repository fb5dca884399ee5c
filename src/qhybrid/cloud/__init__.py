"""An emulated public quantum cloud: a stand-alone server that behaves like a remote QPU provider.

It follows a Braket-like task model: a client submits an OpenQASM 3 program under a client token,
gets a task id back, and polls the task through QUEUED, RUNNING and a terminal state. State lives
in SQLite under the data directory, so tasks survive restarts, and every request received is
appended verbatim to ``received.log`` so tests can check what left the trusted zone.

This package is the *public* zone: it must never import anything from ``qhybrid`` outside
``qhybrid.cloud`` (``tests/cloud/test_isolation.py`` enforces it).
"""
