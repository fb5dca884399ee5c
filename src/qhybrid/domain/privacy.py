"""How much of the problem the obfuscation proxy hides from the QPU's operator."""

from __future__ import annotations

from typing import Literal, get_args

#: ``off`` sends the problem as it is; ``low``/``standard``/``high`` add the proxy's transforms,
#: ``high`` also decoy qubits (docs/security.md says what each hides and what it costs).
PrivacyLevel = Literal["off", "low", "standard", "high"]
PRIVACY_LEVELS: tuple[PrivacyLevel, ...] = get_args(PrivacyLevel)
