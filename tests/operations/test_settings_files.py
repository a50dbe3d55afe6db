"""Settings from files (Docker secrets) and TLS to Temporal: read once, fail naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from mentorflow.config import ConfigurationError, Settings


def test_a_setting_may_come_from_a_file_and_never_from_both(tmp_path: Path) -> None:
    secret = tmp_path / "keys"
    secret.write_text("k1:" + "A" * 43 + "=\n")
    settings = Settings.from_env({"MENTORFLOW_ENCRYPTION_KEYS_FILE": str(secret)})
    assert settings.encryption_keys is not None
    assert settings.encryption_keys.get_secret_value() == "k1:" + "A" * 43 + "="
    with pytest.raises(ConfigurationError, match="MENTORFLOW_ENCRYPTION_KEYS and MENTORFLOW_ENCRYPTION_KEYS_FILE"):
        Settings.from_env({"MENTORFLOW_ENCRYPTION_KEYS_FILE": str(secret), "MENTORFLOW_ENCRYPTION_KEYS": "x"})
    with pytest.raises(ConfigurationError, match="MENTORFLOW_DATABASE_URL_FILE: cannot read"):
        Settings.from_env({"MENTORFLOW_DATABASE_URL_FILE": str(tmp_path / "missing")})


def test_tls_to_temporal_reads_its_pem_files(tmp_path: Path) -> None:
    assert Settings.from_env({}).temporal_tls() is False
    ca = trustme.CA()
    cert = ca.issue_cert("worker.mentorflow")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    settings = Settings.from_env({
        "MENTORFLOW_TEMPORAL_TLS_CA_FILE": str(tmp_path / "ca.pem"),
        "MENTORFLOW_TEMPORAL_TLS_CERT_FILE": str(tmp_path / "cert.pem"),
        "MENTORFLOW_TEMPORAL_TLS_KEY_FILE": str(tmp_path / "key.pem"),
        "MENTORFLOW_TEMPORAL_TLS_SERVER_NAME": "temporal",
    })  # fmt: skip
    tls = settings.temporal_tls()
    assert not isinstance(tls, bool)
    assert tls.server_root_ca_cert == ca.cert_pem.bytes() and tls.domain == "temporal"
    assert tls.client_cert is not None and tls.client_private_key is not None
    half = Settings.from_env({"MENTORFLOW_TEMPORAL_TLS_CA_FILE": str(tmp_path / "ca.pem"),
                              "MENTORFLOW_TEMPORAL_TLS_CERT_FILE": str(tmp_path / "cert.pem")})  # fmt: skip
    with pytest.raises(ConfigurationError, match="both"):
        half.temporal_tls()
