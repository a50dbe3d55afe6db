"""The deployment's files as the tests read them: docker-compose.yml (its services, their
environment with compose's interpolation, commands, mounts and ports), the Dockerfile's
stages and instructions, .dockerignore's rules and the files `pip install .` needs."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from datetime import timedelta
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from temporalio.api.enums.v1 import IndexedValueType

from mentorflow.api.settings import ApiSettings
from tests.support.session import project_root

ROOT = project_root()
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

WORKER = "mentorflow-worker"
MIGRATE = "mentorflow-migrate"
ADMIN_JOB = "temporal-admin-tools"
UI = "temporal-ui"
API = "mentorflow-api"



# -- reading the files ---------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def service(name: str) -> dict[str, Any]:
    assert name in services(), f"docker-compose.yml has no service {name!r}"
    return services()[name]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of its two spellings, as strings."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolated(value: str) -> str:
    """The value Compose hands the container when none of the referenced variables is set."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("op") in (":-", "-"):
            return match.group("default")
        return ""

    return _INTERPOLATION.sub(substitute, value)


def as_list(value: Any) -> list[str] | None:
    """An entrypoint or command as Compose runs it: lists as they are, strings split like a shell."""
    if value is None:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    return [str(item) for item in value]


def image_service_command(svc: dict[str, Any]) -> list[str]:
    """What a service running someone else's image runs, as far as this file overrides it."""
    return (as_list(svc.get("entrypoint")) or []) + (as_list(svc.get("command")) or [])


def depends_on(svc: dict[str, Any]) -> dict[str, str]:
    """Service name -> condition, for both the list and the mapping form of depends_on."""
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def parse_duration(text: str) -> timedelta:
    """A Compose duration such as `30s`, `1m30s` or `1h`."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?", str(text).strip())
    assert parts and any(parts.groups()), f"not a Compose duration: {text!r}"
    hours, minutes, seconds, millis = (int(group or 0) for group in parts.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds, milliseconds=millis)


def cli_type_name(key: Any) -> str:
    """A search attribute's type as the `temporal` CLI spells it: Keyword, KeywordList, Double, ..."""
    # e.g. INDEXED_VALUE_TYPE_KEYWORD_LIST; the SDK's enum shares the protobuf enum's numbers.
    proto_name = IndexedValueType.Name(IndexedValueType.ValueType(int(key.indexed_value_type)))
    return "".join(word.title() for word in proto_name.removeprefix("INDEXED_VALUE_TYPE_").split("_"))


def registered_search_attributes() -> dict[str, str]:
    """Name -> type, from the admin job's SEARCH_ATTRIBUTES (`Name=Type`, whitespace-separated)."""
    pairs = environment(service(ADMIN_JOB)).get("SEARCH_ATTRIBUTES", "").split()
    registered: dict[str, str] = {}
    for pair in pairs:
        name, _, type_name = pair.partition("=")
        assert name not in registered, f"{name} is listed twice in SEARCH_ATTRIBUTES"
        registered[name] = type_name
    return registered


def mounted_file(svc: dict[str, Any], container_path: str) -> Path:
    """The repository file bind-mounted at `container_path` in a service."""
    for volume in svc.get("volumes") or []:
        source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        if target == container_path:
            assert source.startswith("."), f"{container_path} is not mounted from the repository"
            return ROOT / str(source)
    raise AssertionError(f"nothing is mounted at {container_path}")


def published_ports(svc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, protocol) for every port a service publishes on the host."""
    published = []
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published") is not None:
                published.append((port.get("host_ip", ""), str(port["published"]), port.get("protocol", "tcp")))
            continue
        spec, _, protocol = str(port).partition("/")
        fields = spec.rsplit(":", 2)
        if len(fields) == 1:
            continue  # container port only: Docker picks a free host port
        host_ip = fields[0].strip("[]") if len(fields) == 3 else ""
        published.append((host_ip, fields[-2], protocol or "tcp"))
    return published


# Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines, also those inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def exec_form(arguments: str) -> list[str]:
    """An ENTRYPOINT/CMD as the process it starts: JSON (exec) form, or shell form via /bin/sh -c."""
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert isinstance(parsed, list)
        return [str(item) for item in parsed]
    return ["/bin/sh", "-c", arguments]


def flags_and_words(arguments: str) -> tuple[dict[str, str], list[str]]:
    words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
    flags = dict(word[2:].partition("=")[::2] for word in words if word.startswith("--"))
    return flags, [word for word in words if not word.startswith("--")]


def stages() -> list[dict[str, Any]]:
    """Each build stage: its resolved base image, name and instructions."""
    global_args: dict[str, str] = {}
    found: list[dict[str, Any]] = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ARG" and not found:
            arg_name, _, default = arguments.partition("=")
            global_args[arg_name.strip()] = default.strip().strip("\"'")
        elif keyword == "FROM":
            _, words = flags_and_words(arguments)
            image = re.sub(
                r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)",
                lambda m: global_args.get(m.group(1) or m.group(3), m.group(2) or ""),
                words[0],
            )
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append({"image": image, "name": name, "instructions": []})
        else:
            assert found, f"{keyword} before the first FROM"
            found[-1]["instructions"].append((keyword, arguments))
    assert found, "the Dockerfile has no FROM"
    return found


def final_stage_setting(keyword: str) -> str | None:
    """The last ENTRYPOINT/CMD/USER/... of the final stage (these do not carry over between stages)."""
    values = [arguments for found, arguments in stages()[-1]["instructions"] if found == keyword]
    return values[-1] if values else None


def image_command() -> tuple[list[str], list[str]]:
    entrypoint = final_stage_setting("ENTRYPOINT")
    command = final_stage_setting("CMD")
    return (exec_form(entrypoint) if entrypoint else []), (exec_form(command) if command else [])


# deploy/secret-env.sh, mounted here: `secret-env.sh VAR... -- COMMAND...` reads each VAR_FILE
# (a Docker secret) into VAR, then execs COMMAND.
SECRET_ENV = "/deploy/secret-env.sh"


def secret_env(command: list[str]) -> tuple[list[str], list[str]] | None:
    """(the variables it reads from files, the command it runs) for a command run through
    deploy/secret-env.sh; None for any other command."""
    if SECRET_ENV not in command:
        return None
    start = command.index(SECRET_ENV) + 1
    assert "--" in command[start:], f"secret-env.sh without `--` before its command: {command}"
    end = command.index("--", start)
    return command[start:end], command[end + 1 :]


def variables_read_from_files(svc: dict[str, Any]) -> list[str]:
    """The variables a service's deploy/secret-env.sh entrypoint fills from VAR_FILE."""
    wrapped = secret_env(as_list(svc.get("entrypoint")) or [])
    return wrapped[0] if wrapped else []


def runs_the_api(svc: dict[str, Any]) -> bool:
    """Whether a service runs `mentorflow api` (and so reads MENTORFLOW_API_*)."""
    return svc.get("image") == service(WORKER).get("image") and effective_command(svc)[:2] == ["mentorflow", "api"]


def files_the_program_reads(svc: dict[str, Any]) -> set[str]:
    """The *_FILE variables a service's program reads as files itself, without secret-env.sh:
    for `mentorflow api`, its settings that are paths (MENTORFLOW_API_KEY_SECRET_FILE...),
    which mentorflow/api/settings.py reads (`ApiSettings.key_secret_bytes`)."""
    if not runs_the_api(svc):
        return set()
    return {f"MENTORFLOW_API_{field.upper()}" for field in ApiSettings.model_fields if field.endswith("_file")}


def effective_command(svc: dict[str, Any]) -> list[str]:
    """What a Compose service built from the Dockerfile runs: its overrides or the image's defaults,
    past deploy/secret-env.sh when it runs through it.

    As in Docker, overriding the entrypoint drops the image's CMD.
    """
    image_entrypoint, image_cmd = image_command()
    entrypoint = as_list(svc.get("entrypoint"))
    command = as_list(svc.get("command"))
    if entrypoint is not None:
        runs = entrypoint + (command or [])
    else:
        runs = image_entrypoint + (command if command is not None else image_cmd)
    wrapped = secret_env(runs)
    return wrapped[1] if wrapped else runs


# .dockerignore ---------------------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out, index = out + pattern[index : end + 1], end + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out)


@cache
def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes?, pattern) in file order; the last rule that matches a path decides."""
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip("/")))
        rules.append((not negated, _dockerignore_regex(pattern)))
    return rules


def in_build_context(relative: str) -> bool:
    """Whether Docker sends this file: a rule matching the path or any folder above it counts."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    excluded = False
    for excludes, regex in dockerignore_rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = excludes
    return not excluded


def files_pip_install_needs() -> list[str]:
    """Every file `pip install .` reads, from pyproject.toml's own description of the package."""
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    setuptools = pyproject["tool"]["setuptools"]
    package_data = setuptools.get("package-data", {})
    needed = ["pyproject.toml"]
    readme = pyproject["project"].get("readme")
    if isinstance(readme, str) and (ROOT / readme).exists():
        needed.append(readme)
    needed += [f"{module}.py" for module in setuptools.get("py-modules", [])]
    for package in setuptools["packages"]:
        folder = ROOT / package.replace(".", "/")
        needed += [path.relative_to(ROOT).as_posix() for path in sorted(folder.glob("*.py"))]
        for pattern in package_data.get(package, []):
            needed += [path.relative_to(ROOT).as_posix() for path in sorted(folder.glob(pattern))]
    return needed


def api_settings_of(name: str) -> ApiSettings:
    """The API settings a service runs with (the secret file exists only in the container)."""
    env = environment(service(name))
    given = {key: interpolated(value) for key, value in env.items() if key.startswith("MENTORFLOW_API_")}
    return ApiSettings.from_env(given)
