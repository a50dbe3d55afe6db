"""Static checks of the container deployment: Dockerfile, .dockerignore and docker-compose.yml.

Docker does not run where these tests run, so they read the files and hold them against the
code they deploy: the search attributes the workflow upserts, the settings the worker and the
HTTP API read, the packages pyproject.toml installs, the shutdown timeouts they honour.
"""

from __future__ import annotations

import ast
import glob
import re
import subprocess
import sys
import tomllib
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mentorflow.api.settings import ApiSettings
from mentorflow.config import Settings
from tests.support.compose_files import (
    ADMIN_JOB,
    API,
    COMPOSE_FILE,
    DOCKERFILE,
    MIGRATE,
    PYPROJECT,
    ROOT,
    UI,
    WORKER,
    api_settings_of,
    as_list,
    cli_type_name,
    compose,
    depends_on,
    effective_command,
    environment,
    files_pip_install_needs,
    files_the_program_reads,
    final_stage_setting,
    flags_and_words,
    image_command,
    image_service_command,
    in_build_context,
    interpolated,
    mounted_file,
    parse_duration,
    published_ports,
    registered_search_attributes,
    runs_the_api,
    service,
    services,
    stages,
    variables_read_from_files,
)
from workflows.search_attributes import ALL_KEYS

# Settings the worker cannot run without; the others (state_dir, temporal_ui_port) are for `mentorflow dev`.
REQUIRED_WORKER_SETTINGS = ("database_url", "temporal_address", "temporal_namespace", "task_queue")

# Custom search attributes a namespace can hold on SQL visibility (PostgreSQL), per type:
# Temporal preallocates Keyword01..Keyword10, Int01..Int03, ... (sadefs.GetDBIndexSearchAttributes).
SQL_VISIBILITY_SLOTS = {"Keyword": 10, "KeywordList": 3, "Text": 3, "Int": 3, "Double": 3, "Bool": 3, "Datetime": 3}


# -- the compose file as a whole -------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    check_jsonschema = Path(sys.executable).with_name("check-jsonschema")
    command = [str(check_jsonschema)] if check_jsonschema.exists() else [sys.executable, "-m", "check_jsonschema"]
    result = subprocess.run(
        [*command, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_has_no_obsolete_version_key() -> None:
    assert "version" not in compose(), "`version:` is obsolete in the Compose specification; Compose warns about it"


def test_every_service_in_depends_on_exists_and_waits_for_something_it_can() -> None:
    for name, svc in services().items():
        for dependency, condition in depends_on(svc).items():
            assert dependency in services(), f"{name} depends on {dependency}, which is not a service"
            if condition == "service_healthy":
                assert "healthcheck" in services()[dependency], f"{name} waits for {dependency} to be healthy, but it has no healthcheck"
            if condition == "service_completed_successfully":
                restart = str(services()[dependency].get("restart", "no"))
                assert restart == "no" or restart.startswith("on-failure"), (
                    f"{name} waits for {dependency} to complete, but restart: {restart} restarts it after it exits"
                )


def test_depends_on_has_no_cycle() -> None:
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in visiting, f"depends_on cycle: {' -> '.join([*path, name])}"
        if name in done:
            return
        visiting.add(name)
        for dependency in depends_on(services()[name]):
            if dependency in services():
                visit(dependency, [*path, name])
        visiting.discard(name)
        done.add(name)

    for name in services():
        visit(name, [])


def test_published_ports_do_not_collide() -> None:
    taken: list[tuple[str, str, str, str]] = []
    for name, svc in services().items():
        for host_ip, port, protocol in published_ports(svc):
            assert port.isdigit(), f"{name} publishes a port range or variable {port!r}; pin it"
            for other, other_ip, other_port, other_protocol in taken:
                overlapping_ips = not host_ip or not other_ip or host_ip in ("0.0.0.0", other_ip) or other_ip == "0.0.0.0"
                assert not (port == other_port and protocol == other_protocol and overlapping_ips), (
                    f"{name} and {other} both publish host port {port}/{protocol}"
                )
            taken.append((name, host_ip, port, protocol))


def test_replicated_services_publish_no_fixed_host_port() -> None:
    for name, svc in services().items():
        replicas = (svc.get("deploy") or {}).get("replicas", 1)
        if replicas > 1:
            assert not published_ports(svc), f"{name} has {replicas} replicas; they cannot all bind the same host port"


def test_images_are_pinned() -> None:
    for name, svc in services().items():
        if "build" in svc:
            continue
        image = svc["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag and tag not in ("", "latest"), f"{name}: pin {image} to a version"


def test_temporal_server_and_its_admin_tools_are_the_same_release() -> None:
    # The schema job upgrades the database to what its admin-tools release ships; a server
    # of another release may refuse that schema.
    versions = {
        svc["image"].rpartition(":")[2]
        for svc in services().values()
        if svc.get("image", "").startswith(("temporalio/server:", "temporalio/admin-tools:"))
    }
    assert len(versions) == 1, f"temporalio/server and temporalio/admin-tools versions differ: {sorted(versions)}"


def test_bind_mounted_files_exist() -> None:
    for name, svc in services().items():
        for volume in svc.get("volumes") or []:
            source = volume.get("source", "") if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_temporal_server_and_its_clients_use_the_same_database_credentials() -> None:
    database = environment(service("postgresql"))
    server = environment(service("temporal"))
    schema_job = environment(service("temporal-schema"))
    assert server["POSTGRES_USER"] == schema_job["POSTGRES_USER"] == database["POSTGRES_USER"]
    # One secret file: the image reads POSTGRES_PASSWORD_FILE itself, the other two through secret-env.sh.
    assert server["POSTGRES_PWD_FILE"] == schema_job["SQL_PASSWORD_FILE"] == database["POSTGRES_PASSWORD_FILE"]
    assert "POSTGRES_PWD" in variables_read_from_files(service("temporal"))
    assert "SQL_PASSWORD" in variables_read_from_files(service("temporal-schema"))
    assert server["POSTGRES_SEEDS"] == schema_job["POSTGRES_SEEDS"] == "postgresql"
    assert server["DB"] == "postgres12", "the SQL plugin the server and temporal-sql-tool use for PostgreSQL"


def test_temporal_server_waits_for_its_schema() -> None:
    assert depends_on(service("temporal")).get("temporal-schema") == "service_completed_successfully"


# -- search attributes and namespace ---------------------------------------------------------


def test_admin_job_registers_every_search_attribute_with_its_type() -> None:
    wanted = {key.name: cli_type_name(key) for key in ALL_KEYS}
    registered = registered_search_attributes()
    missing = {name: kind for name, kind in wanted.items() if name not in registered}
    wrong = {name: (registered[name], kind) for name, kind in wanted.items() if name in registered and registered[name] != kind}
    unused = sorted(set(registered) - set(wanted))
    assert not missing, f"add to {ADMIN_JOB} SEARCH_ATTRIBUTES: {' '.join(f'{n}={k}' for n, k in missing.items())}"
    assert not wrong, f"wrong types in SEARCH_ATTRIBUTES (compose, code): {wrong}"
    assert not unused, f"SEARCH_ATTRIBUTES registers attributes the code does not use, taking SQL slots: {unused}"


def test_search_attributes_fit_the_sql_visibility_slots() -> None:
    counts = Counter(cli_type_name(key) for key in ALL_KEYS)
    for kind, count in counts.items():
        assert kind in SQL_VISIBILITY_SLOTS, f"{kind} search attributes are not supported on SQL visibility"
        assert count <= SQL_VISIBILITY_SLOTS[kind], (
            f"{count} {kind} search attributes, but a namespace on PostgreSQL visibility holds {SQL_VISIBILITY_SLOTS[kind]}"
        )


def test_admin_job_script_creates_the_namespace_and_the_search_attributes() -> None:
    admin = service(ADMIN_JOB)
    command = image_service_command(admin)
    scripts = [word for word in command if word.endswith(".sh")]
    assert scripts, f"{ADMIN_JOB} runs no script: {command}"
    script = mounted_file(admin, scripts[0]).read_text(encoding="utf-8")
    assert "temporal operator namespace create" in script
    assert "temporal operator search-attribute create" in script
    assert "$SEARCH_ATTRIBUTES" in script, "the script must register what SEARCH_ATTRIBUTES lists"
    assert re.search(r"--namespace \"\$TEMPORAL_NAMESPACE\"", script)
    # Idempotent: a re-run must not fail because the namespace already exists.
    assert "temporal operator namespace describe" in script


def test_namespace_is_the_same_everywhere() -> None:
    worker_namespace = environment(service(WORKER)).get("MENTORFLOW_TEMPORAL_NAMESPACE") or Settings().temporal_namespace
    assert environment(service(ADMIN_JOB))["TEMPORAL_NAMESPACE"] == worker_namespace
    assert environment(service(UI)).get("TEMPORAL_DEFAULT_NAMESPACE") == worker_namespace
    migrate_namespace = environment(service(MIGRATE)).get("MENTORFLOW_TEMPORAL_NAMESPACE")
    assert migrate_namespace in (None, worker_namespace)


# -- the mentorflow services -------------------------------------------------------------------


def test_every_mentorflow_variable_is_a_setting() -> None:
    # Settings.from_env reads only its own fields: a misspelt variable would be silently ignored.
    # MENTORFLOW_X_FILE counts when the service's deploy/secret-env.sh reads it into MENTORFLOW_X.
    # The HTTP API's own settings are ApiSettings' fields (mentorflow/api/settings.py), read as
    # MENTORFLOW_API_<FIELD>, and only by the services that run `mentorflow api`.
    known = {f"MENTORFLOW_{field.upper()}" for field in Settings.model_fields}
    api_known = {f"MENTORFLOW_API_{field.upper()}" for field in ApiSettings.model_fields}
    assert not known & api_known, "a Settings field and an ApiSettings field share a variable"
    assert any(runs_the_api(svc) for svc in services().values()), "no service runs `mentorflow api`"
    for name, svc in services().items():
        readable = known | (api_known if runs_the_api(svc) else set())
        from_files = {f"{variable}_FILE" for variable in variables_read_from_files(svc) if variable in readable}
        unknown = sorted(
            key for key in environment(svc) if key.startswith("MENTORFLOW_") and key not in readable | from_files
        )
        assert not unknown, f"{name} sets {unknown}, which neither Settings nor (for `mentorflow api`) ApiSettings reads"


def test_worker_is_given_every_setting_it_needs() -> None:
    env = environment(service(WORKER))
    for field in REQUIRED_WORKER_SETTINGS:
        assert f"MENTORFLOW_{field.upper()}" in env, f"{WORKER} needs MENTORFLOW_{field.upper()}"
    # The secret files exist only in the containers: read the rest (from_env reads *_FILE itself).
    settings = Settings.from_env({key: interpolated(value) for key, value in env.items() if not key.endswith("_FILE")})
    assert settings.require_database_url()


def test_migrate_job_is_given_the_same_database_as_the_worker() -> None:
    assert environment(service(MIGRATE)).get("MENTORFLOW_DATABASE_URL") == environment(service(WORKER))["MENTORFLOW_DATABASE_URL"]


def test_worker_addresses_point_at_services_in_this_file() -> None:
    env = {key: interpolated(value) for key, value in environment(service(WORKER)).items()}
    host, _, port = env["MENTORFLOW_TEMPORAL_ADDRESS"].rpartition(":")
    assert host in services() and port == "7233", f"no Temporal frontend at {env['MENTORFLOW_TEMPORAL_ADDRESS']}"
    assert environment(service(ADMIN_JOB))["TEMPORAL_ADDRESS"] == environment(service(WORKER))["MENTORFLOW_TEMPORAL_ADDRESS"]

    url = urlsplit(env["MENTORFLOW_DATABASE_URL"])
    assert url.scheme in ("postgres", "postgresql")
    assert url.hostname in services(), f"the database URL names {url.hostname}, which is not a service"
    database = environment(services()[url.hostname])
    assert url.username == database["POSTGRES_USER"]
    # The password is not in the URL: asyncpg reads PGPASSWORD, which secret-env.sh fills
    # from the database's own password file.
    assert url.password is None, "the database password belongs in a secret file, not in the URL"
    assert "PGPASSWORD" in variables_read_from_files(service(WORKER))
    assert env["PGPASSWORD_FILE"] == database["POSTGRES_PASSWORD_FILE"]
    assert url.path.lstrip("/") == database.get("POSTGRES_DB", database["POSTGRES_USER"])


def test_worker_builds_from_the_dockerfile_and_runs_mentorflow_worker() -> None:
    worker = service(WORKER)
    build = worker.get("build")
    assert build is not None, f"{WORKER} must be built from this repository"
    context, dockerfile = (build, "Dockerfile") if isinstance(build, str) else (build.get("context", "."), build.get("dockerfile", "Dockerfile"))
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE
    assert effective_command(worker) == ["mentorflow", "worker"]


def test_migrate_job_runs_mentorflow_migrate_from_the_same_image() -> None:
    migrate = service(MIGRATE)
    assert migrate.get("build") == service(WORKER).get("build")
    assert migrate.get("image") == service(WORKER).get("image")
    assert effective_command(migrate) == ["mentorflow", "migrate"]


def test_the_commands_compose_runs_exist_in_the_cli() -> None:
    import typer

    cli = pytest.importorskip("mentorflow.cli", reason="the mentorflow command is not written yet")
    built = [name for name, svc in services().items() if svc.get("image") == service(WORKER).get("image")]
    assert {WORKER, MIGRATE, VERSION_JOB, API} <= set(built)
    for name in built:
        command = effective_command(service(name))
        assert command[0] == "mentorflow", f"{name} runs {command}"
        # Down the command groups (`deployment set-current`) to a command that runs.
        found: Any = typer.main.get_command(cli.app)
        path = ["mentorflow"]
        for word in command[1:]:
            if word.startswith("-") or not hasattr(found, "commands"):
                break
            assert word in found.commands, f"{name} runs `{' '.join([*path, word])}`, which does not exist"
            found, path = found.commands[word], [*path, word]
        assert len(path) > 1 and not hasattr(found, "commands"), f"{name} runs `{' '.join(path)}`, not a command"


def test_worker_waits_for_migrations_and_for_the_namespace() -> None:
    waits = depends_on(service(WORKER))
    assert waits.get(MIGRATE) == "service_completed_successfully", f"{WORKER} must wait for {MIGRATE} to succeed"
    assert waits.get(ADMIN_JOB) == "service_completed_successfully", (
        f"{WORKER} must wait for {ADMIN_JOB}: without its search attributes the workflow's upserts fail"
    )


def test_worker_restarts_and_scales() -> None:
    worker = service(WORKER)
    assert worker.get("restart") in ("always", "unless-stopped", "on-failure") or "restart_policy" in worker.get("deploy", {})
    assert "container_name" not in worker, "a fixed container_name prevents more than one replica"
    assert (worker.get("deploy") or {}).get("replicas", 1) >= 2


def graceful_shutdown_timeouts() -> list[timedelta]:
    """Every literal `graceful_shutdown_timeout=timedelta(...)` in worker.py and the mentorflow package."""
    found = []
    for path in [ROOT / "worker.py", *sorted((ROOT / "mentorflow").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.keyword) and node.arg == "graceful_shutdown_timeout"):
                continue
            value = node.value
            assert isinstance(value, ast.Call) and getattr(value.func, "id", None) == "timedelta", (
                f"{path.name}: graceful_shutdown_timeout is not a literal timedelta; teach this test to read it"
            )
            found.append(timedelta(**{kw.arg: ast.literal_eval(kw.value) for kw in value.keywords if kw.arg}))
    return found


def test_stop_grace_period_outlasts_the_workers_graceful_shutdown() -> None:
    timeouts = graceful_shutdown_timeouts()
    assert timeouts, "found no graceful_shutdown_timeout in worker.py: the worker would drop its activities on stop"
    grace = parse_duration(service(WORKER).get("stop_grace_period", "10s"))
    # Leave room for closing the database pool and the Temporal connection after the worker stops.
    assert grace >= max(timeouts) + timedelta(seconds=5), f"stop_grace_period {grace} is too short for {max(timeouts)}"


def test_worker_is_stopped_with_a_signal_it_handles() -> None:
    signal_name = service(WORKER).get("stop_signal") or final_stage_setting("STOPSIGNAL") or "SIGTERM"
    assert signal_name in ("SIGTERM", "SIGINT"), f"`mentorflow worker` stops gracefully on SIGTERM or SIGINT, not {signal_name}"


# -- the HTTP API --------------------------------------------------------------------------------


def test_api_runs_mentorflow_api_from_the_workers_image() -> None:
    api = service(API)
    assert api.get("build") == service(WORKER).get("build") and api.get("image") == service(WORKER).get("image")
    assert effective_command(api) == ["mentorflow", "api"]
    assert runs_the_api(api) and [name for name, svc in services().items() if runs_the_api(svc)] == [API]


def test_api_is_stateless_with_at_least_two_replicas() -> None:
    api = service(API)
    assert (api.get("deploy") or {}).get("replicas", 1) >= 2, f"{API} runs fewer than 2 replicas"
    assert "container_name" not in api, "a fixed container_name prevents more than one replica"
    assert api.get("restart") in ("always", "unless-stopped", "on-failure") or "restart_policy" in api.get("deploy", {})
    assert not api.get("ports"), f"{API} must not be published: the gateway forwards /v1/ to it"
    # Stateless: nothing of its own survives a replica; the one mount is the read-only script.
    for volume in api.get("volumes") or []:
        assert isinstance(volume, str), f"{API} mounts {volume}"
        source, _, mode = volume.split(":")
        assert source.startswith("./deploy/") and mode == "ro", f"{API} mounts {volume}: it must keep no state"


def test_api_waits_for_migrations_and_for_the_namespace() -> None:
    waits = depends_on(service(API))
    assert waits.get(MIGRATE) == "service_completed_successfully"
    assert waits.get(ADMIN_JOB) == "service_completed_successfully"


def test_api_is_given_the_workers_database_temporal_and_keys() -> None:
    env = environment(service(API))
    worker = environment(service(WORKER))
    assert env["MENTORFLOW_DATABASE_URL"] == worker["MENTORFLOW_DATABASE_URL"], "the API's keys and audit live in the event store"
    assert env["PGPASSWORD_FILE"] == worker["PGPASSWORD_FILE"] and "PGPASSWORD" in variables_read_from_files(service(API))
    # It decrypts what it returns: the workers' payload keys, through secret-env.sh as theirs.
    assert env["MENTORFLOW_ENCRYPTION_KEYS_FILE"] == worker["MENTORFLOW_ENCRYPTION_KEYS_FILE"]
    assert "MENTORFLOW_ENCRYPTION_KEYS" in variables_read_from_files(service(API))
    settings, worker_settings = settings_of(API), settings_of(WORKER)
    assert settings.require_database_url()
    for field in ("temporal_address", "temporal_namespace", "task_queue", "max_payload_bytes"):
        assert getattr(settings, field) == getattr(worker_settings, field), f"{API} and {WORKER} differ in {field}"


def test_api_reads_its_key_secret_from_a_file_itself() -> None:
    env = environment(service(API))
    assert "MENTORFLOW_API_KEY_SECRET" not in env, "the server secret is a file, never a value"
    assert env.get("MENTORFLOW_API_KEY_SECRET_FILE", "").startswith("/run/secrets/")
    assert "MENTORFLOW_API_KEY_SECRET_FILE" in files_the_program_reads(service(API))
    # Read by the API itself (mentorflow/api/settings.py), so the secret never enters the environment.
    assert "MENTORFLOW_API_KEY_SECRET" not in variables_read_from_files(service(API))
    assert api_settings_of(API).key_secret_file is not None


def test_api_listens_where_the_network_and_its_healthcheck_expect() -> None:
    from mentorflow.api.app import create_app

    api = service(API)
    settings = api_settings_of(API)
    assert settings.host in ("0.0.0.0", "::"), "bound to loopback, the gateway in another container cannot reach it"
    exposed = {str(port).split("/")[0] for port in api.get("expose") or []}
    assert str(settings.port) in exposed, f"{API} should expose {settings.port} to the network"
    health = " ".join(as_list(api["healthcheck"]["test"]) or [])
    assert f"http://127.0.0.1:{settings.port}/v1/health" in health
    paths = {getattr(route, "path", None) for route in create_app(api_settings=ApiSettings()).routes}
    assert "/v1/health" in paths, "the healthcheck asks for a route the API does not serve"


def test_api_stop_grace_period_outlasts_a_command() -> None:
    grace = parse_duration(service(API).get("stop_grace_period", "10s"))
    # uvicorn lets running requests finish on SIGTERM; a command waits up to the command timeout.
    assert grace >= timedelta(seconds=api_settings_of(API).command_timeout + 5), f"stop_grace_period {grace} is too short"


# -- metrics and Worker Deployment Versioning -------------------------------------------------

VERSION_JOB = "mentorflow-version"


def positional_arguments(words: list[str]) -> list[str]:
    """The arguments of a command line that are not options or their values (`--wait 300`)."""
    found, value_next = [], False
    for word in words:
        if value_next:
            value_next = False
        elif word.startswith("--"):
            value_next = "=" not in word
        else:
            found.append(word)
    return found


def settings_of(name: str) -> Settings:
    """The settings a mentorflow service runs with when no variable of .env is set."""
    # The secret files exist only in the containers (from_env would read a *_FILE itself).
    env = environment(service(name))
    return Settings.from_env({key: interpolated(value) for key, value in env.items() if not key.endswith("_FILE")})


def test_worker_serves_metrics_to_the_compose_network() -> None:
    settings = settings_of(WORKER)
    assert settings.metrics_port is not None, f"{WORKER} serves no metrics: set MENTORFLOW_METRICS_PORT"
    assert settings.metrics_host in ("0.0.0.0", "::"), "bound to loopback, Prometheus in another container cannot scrape it"
    exposed = {str(port).split("/")[0] for port in service(WORKER).get("expose") or []}
    assert str(settings.metrics_port) in exposed, f"{WORKER} should expose {settings.metrics_port} to the network"


def test_workers_are_versioned_and_a_job_makes_their_version_current() -> None:
    worker = settings_of(WORKER)
    assert worker.build_id, f"{WORKER} should run versioned (MENTORFLOW_BUILD_ID, docs/deploying.md)"
    job = service(VERSION_JOB)
    command = effective_command(job)
    assert command[:3] == ["mentorflow", "deployment", "set-current"], command
    # The same build, deployment and server as the workers it waits for.
    version = settings_of(VERSION_JOB)
    arguments = positional_arguments(command[3:])
    assert (arguments[0] if arguments else version.build_id) == worker.build_id
    for field in ("deployment_name", "temporal_address", "temporal_namespace"):
        assert getattr(version, field) == getattr(worker, field), f"{VERSION_JOB} and {WORKER} differ in {field}"
    # It waits for the workers to poll, so it starts with them and has time to see them.
    assert depends_on(job).get(WORKER) in ("service_started", "service_healthy")
    assert "--wait" in command and float(command[command.index("--wait") + 1]) >= 60
    assert job.get("restart") in (None, "no") or str(job.get("restart")).startswith("on-failure"), "a one-shot job"


def test_the_build_id_can_be_set_per_release_without_editing_the_file() -> None:
    value = environment(service(WORKER)).get("MENTORFLOW_BUILD_ID", "")
    assert re.fullmatch(r"\$\{MENTORFLOW_BUILD_ID:-[^}]+\}", value), (
        f"MENTORFLOW_BUILD_ID should come from .env or the shell with a default, not {value!r}"
    )


# -- the Dockerfile ----------------------------------------------------------------------------


def minimum_python() -> tuple[int, int]:
    requires = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["requires-python"]
    match = re.search(r">=\s*(\d+)\.(\d+)", requires)
    assert match, f"cannot read a minimum version from requires-python = {requires!r}"
    return int(match[1]), int(match[2])


def test_dockerfile_builds_on_a_supported_python() -> None:
    python_images = [stage["image"] for stage in stages() if stage["image"].split(":")[0] in ("python", "docker.io/library/python")]
    final = stages()[-1]["image"]
    assert final in python_images, f"the final stage runs on {final}, not on an official python image"
    for image in python_images:
        version = re.match(r"(\d+)\.(\d+)", image.partition(":")[2])
        assert version, f"{image}: pin the Python version in the tag"
        assert (int(version[1]), int(version[2])) >= minimum_python(), f"{image} is older than requires-python"
    # A virtualenv copied between stages only works on the Python it was made with.
    assert len({re.match(r"\d+\.\d+", image.partition(":")[2])[0] for image in python_images}) == 1  # type: ignore[index]


def test_dockerfile_installs_the_project() -> None:
    runs = [arguments for stage in stages() for keyword, arguments in stage["instructions"] if keyword == "RUN"]
    assert any(re.search(r"pip install (?:--\S+ )*\.(?:\s|$)", run) for run in runs), "no RUN installs the project (`pip install .`)"


def test_dockerfile_runs_mentorflow_worker_by_default() -> None:
    entrypoint, command = image_command()
    assert entrypoint + command == ["mentorflow", "worker"]


def test_dockerfile_runs_as_an_unprivileged_user() -> None:
    user = final_stage_setting("USER")
    assert user is not None, "the final stage has no USER: the worker would run as root"
    assert user.split(":")[0] not in ("root", "0")


def test_dockerfile_copies_only_files_that_exist_and_are_in_the_build_context() -> None:
    for stage in stages():
        for keyword, arguments in stage["instructions"]:
            if keyword not in ("COPY", "ADD"):
                continue
            flags, words = flags_and_words(arguments)
            if "from" in flags:
                continue  # from another stage or image
            for source in words[:-1]:
                if source in (".", "./"):
                    continue
                matches = glob.glob(source, root_dir=ROOT)
                assert matches, f"{keyword} {source}: no such file in the repository"
                for match in matches:
                    assert in_build_context(match), f"{keyword} {match}: .dockerignore leaves it out of the build context"


def test_build_context_holds_everything_pip_install_needs() -> None:
    left_out = [path for path in files_pip_install_needs() if not in_build_context(path)]
    assert not left_out, f".dockerignore leaves out files the package needs: {left_out}"


def test_build_context_leaves_out_tests_and_local_state() -> None:
    for path in ("tests/operations/test_deployment.py", ".git/HEAD", ".mentorflow/x", "events/__pycache__/x.pyc", "docker-compose.yml"):
        assert not in_build_context(path), f"{path} should not be sent to the Docker build"
