"""Backend names and the destinations they may reach come from the settings, never from a request."""

from __future__ import annotations

from pathlib import Path

import pytest

from qhybrid.backends.braket import BraketBackend
from qhybrid.backends.registry import BackendRegistry, check_backend, ibm_requests_policy, parse_backend_name
from qhybrid.core.config import Settings
from qhybrid.gateway.audit import AuditLog

CRN = (
    "crn:v1:bluemix:public:quantum-computing:eu-de:a/0123456789abcdef:11111111-2222-3333-4444-555555555555::"
)


@pytest.mark.parametrize(
    "name",
    [
        "ibm:../admin",
        "ibm:ibm_torino?x=1",
        "ibm:IBM_TORINO",
        "ibm:torino",
        "braket:arn:aws:braket:evil.example.com/x::device/qpu/ionq/Forte-1",
        "braket:arn:aws:braket:us-east-1.attacker::device/qpu/ionq/Forte-1",
        "braket:arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1/../../x",
        "braket:arn:aws:braket:us-east-1::device/other/ionq/Forte-1",
    ],
)
def test_names_outside_the_providers_formats_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"not an IBM backend name|not a Braket device ARN"):
        parse_backend_name(name)


def test_braket_needs_the_operators_region_and_devices_in_it(tmp_path: Path) -> None:
    qpu = "braket:arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3"
    sv1 = "braket:arn:aws:braket:::device/quantum-simulator/amazon/sv1"
    no_region = Settings(data_dir=tmp_path, braket_s3_bucket="amazon-braket-x")
    assert "QHYBRID_AWS_REGION" in (check_backend(sv1, no_region) or "")
    east = Settings(data_dir=tmp_path, braket_s3_bucket="amazon-braket-x", aws_region="us-east-1")
    assert check_backend(sv1, east) is None
    assert "not the configured us-east-1" in (check_backend(qpu, east) or "")
    west = Settings(data_dir=tmp_path, braket_s3_bucket="amazon-braket-x", aws_region="us-west-1")
    assert check_backend(qpu, west) is None


def test_braket_destinations_are_the_settings_and_the_extras(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        braket_s3_bucket="amazon-braket-x",
        aws_region="eu-north-1",
        egress_allow=["vpce-123.braket.eu-north-1.vpce.amazonaws.com:443"],
    )
    registry = BackendRegistry(settings)
    backend = registry.get("braket:arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet")
    assert isinstance(backend, BraketBackend)
    assert set(backend._allowed()) == {
        "braket.eu-north-1.amazonaws.com:443",
        "amazon-braket-x.s3.eu-north-1.amazonaws.com:443",
        "s3.eu-north-1.amazonaws.com:443",
        "amazon-braket-x.s3.amazonaws.com:443",
        "vpce-123.braket.eu-north-1.vpce.amazonaws.com:443",
    }


def test_ibm_needs_the_instance_crn_and_its_destinations_follow_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("IAM_URL", "GLOBAL_SEARCH_URL", "GLOBAL_CATALOG_URL"):
        monkeypatch.delenv(name, raising=False)
    name_only = Settings(data_dir=tmp_path, ibm_token="k", ibm_instance="my-instance")
    assert "CRN" in (check_backend("ibm:ibm_torino", name_only) or "")
    settings = Settings(
        data_dir=tmp_path,
        ibm_token="k",
        ibm_instance=CRN,
        egress_allow=["private.eu-de.quantum.cloud.ibm.com:443"],
    )
    assert check_backend("ibm:ibm_torino", settings) is None
    registry = BackendRegistry(settings)
    policy = ibm_requests_policy(settings, AuditLog(tmp_path / "a.log"), registry.tokens)
    assert policy.allowed == {
        "iam.cloud.ibm.com:443",
        "api.global-search-tagging.cloud.ibm.com:443",
        "globalcatalog.cloud.ibm.com:443",
        "eu-de.quantum.cloud.ibm.com:443",  # the CRN's region
        "private.eu-de.quantum.cloud.ibm.com:443",
    }
    assert (policy.instance, policy.api_key) == (CRN, "k")
    unconfigured = ibm_requests_policy(
        Settings(data_dir=tmp_path), AuditLog(tmp_path / "a.log"), registry.tokens
    )
    assert unconfigured.allowed == frozenset()


def test_the_registry_mints_tokens_every_worker_accepts(tmp_path: Path) -> None:
    first = BackendRegistry(Settings(data_dir=tmp_path))
    second = BackendRegistry(Settings(data_dir=tmp_path))  # another worker on the same data dir
    token = first.mint_token()
    assert len(token) == 32 and second.tokens.is_minted(token)
    other = BackendRegistry(Settings(data_dir=tmp_path / "elsewhere"))
    assert not other.tokens.is_minted(token)
