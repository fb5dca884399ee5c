"""Providers' published price lists, importable without any provider SDK.

The API checks a request's ``max_cost`` before anything runs, on request threads that must not
import the quantum SDKs; the adapters use the same tables for the actual cost after a task ran.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from qhybrid.domain.device import Pricing

#: A Braket device ARN: region, device type, provider, device name.
DEVICE_ARN = re.compile(r"^arn:aws[\w-]*:braket:([a-z0-9-]*)::device/([\w-]+)/([\w-]+)/([\w.-]+)$")

_PRICE_SOURCE = (
    "https://aws.amazon.com/braket/pricing/ (on-demand prices as published in 2025; QPUs: "
    "USD 0.30 per task plus a per-shot price; managed simulators: per minute, billed per "
    "millisecond with a 3-second minimum, converted here to per second)"
)

#: Public on-demand prices by (provider, device-name prefix), both lower case.
BRAKET_PRICES: Mapping[tuple[str, str], Pricing] = {
    ("amazon", "sv1"): Pricing(per_second=0.075 / 60, source=_PRICE_SOURCE),
    ("amazon", "dm1"): Pricing(per_second=0.075 / 60, source=_PRICE_SOURCE),
    ("amazon", "tn1"): Pricing(per_second=0.275 / 60, source=_PRICE_SOURCE),
    ("ionq", "forte"): Pricing(per_task=0.30, per_shot=0.08, source=_PRICE_SOURCE),
    ("ionq", "aria"): Pricing(per_task=0.30, per_shot=0.03, source=_PRICE_SOURCE),
    ("iqm", "garnet"): Pricing(per_task=0.30, per_shot=0.00145, source=_PRICE_SOURCE),
    ("iqm", "emerald"): Pricing(per_task=0.30, per_shot=0.0016, source=_PRICE_SOURCE),
    ("rigetti", "ankaa"): Pricing(per_task=0.30, per_shot=0.0009, source=_PRICE_SOURCE),
    ("quera", "aquila"): Pricing(per_task=0.30, per_shot=0.01, source=_PRICE_SOURCE),
}

#: Braket bills its managed simulators for at least this many seconds per task.
SIMULATOR_MINIMUM_SECONDS = 3.0


def braket_pricing(device_arn: str) -> Pricing | None:
    """The published price of a device, or ``None`` if the table does not list it."""
    match = DEVICE_ARN.match(device_arn)
    if match is None:
        return None
    provider, name = match.group(3).lower(), match.group(4).lower()
    for (family_provider, prefix), pricing in BRAKET_PRICES.items():
        if provider == family_provider and name.startswith(prefix):
            return pricing
    return None


#: IBM Quantum Platform pay-as-you-go price per second of QPU time.
IBM_PRICING = Pricing(
    per_second=96.0 / 60,
    source=(
        "https://www.ibm.com/quantum/pricing: Pay-As-You-Go plan, USD 96 per minute of QPU time "
        "(as published in 2025), converted to per second"
    ),
)

#: Seconds of QPU time a job costs on top of its shots (loading, compilation on the control
#: electronics, result transfer); an order of magnitude taken from typical small jobs.
JOB_OVERHEAD_SECONDS = 2.0
#: Delay between shots when the device does not say (IBM's usual default, 250 µs).
DEFAULT_REP_DELAY_SECONDS = 250e-6
#: Duration of one shot's circuit when the caller does not know it.
DEFAULT_CIRCUIT_SECONDS = 100e-6


def estimate_qpu_seconds(
    shots: int, circuit_seconds: float | None = None, rep_delay: float | None = None
) -> float:
    """QPU seconds a Sampler job is expected to use.

    ``JOB_OVERHEAD_SECONDS + shots × (circuit duration + repetition delay)``: each shot runs the
    circuit, then waits the repetition delay for the qubits to relax. A rough estimate for
    budgeting; IBM reports the billed figure per job after it ran.
    """
    circuit = DEFAULT_CIRCUIT_SECONDS if circuit_seconds is None else max(0.0, circuit_seconds)
    delay = DEFAULT_REP_DELAY_SECONDS if rep_delay is None else max(0.0, rep_delay)
    return JOB_OVERHEAD_SECONDS + max(0, shots) * (circuit + delay)
