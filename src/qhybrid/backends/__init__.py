"""QPU provider adapters behind one task contract (``submit/status/result/cancel`` by id).

Adapters see OpenQASM 3 text and shot counts only, never business data.
"""
