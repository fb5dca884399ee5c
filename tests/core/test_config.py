"""The settings sit low in the layers: reading them loads no numerical or upper-layer code."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_settings_loads_only_core_and_domain() -> None:
    code = (
        "import sys, qhybrid.core.config\n"
        "loaded = sorted({m.split('.')[1] for m in sys.modules if m.startswith('qhybrid.')})\n"
        "print(','.join(loaded), 'numpy' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    packages, numpy_loaded = output.stdout.split()
    assert set(packages.split(",")) <= {"core", "domain"}
    assert numpy_loaded == "False"
