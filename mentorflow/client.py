"""Connecting to Temporal the one way every part of mentorflow does."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Coroutine
from typing import Any, ClassVar, NoReturn

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import CompositePayloadConverter, DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from mentorflow.codec import EncryptionCodec
from mentorflow.config import Settings
from mentorflow.keyring import Keyring
from workflows.search_attributes import ALL_KEYS


class SharedPydanticPayloadConverter(CompositePayloadConverter):
    """temporalio's pydantic payload converter, one set of it per process.

    The SDK builds a new payload converter for every workflow activation; a new
    `PydanticPayloadConverter` comes with an empty cache of pydantic TypeAdapters, so every
    activation built the adapters of the values it decoded again (about 5 % of the worker's
    CPU under load, bench/README.md). Instances of this class share one converter, and so
    one cache. The converters keep no other state."""

    _shared: ClassVar[PydanticPayloadConverter | None] = None

    def __init__(self) -> None:
        shared = SharedPydanticPayloadConverter._shared
        if shared is None:
            shared = SharedPydanticPayloadConverter._shared = PydanticPayloadConverter()
        super().__init__(*shared.converters.values())


def data_converter(keyring: Keyring, *, max_payload_bytes: int | None = None) -> DataConverter:
    """pydantic JSON, then every payload (memo and summaries too) encrypted with `keyring`;
    failure messages and stack traces move into an encrypted payload as well."""
    return DataConverter(
        payload_converter_class=SharedPydanticPayloadConverter,
        payload_codec=EncryptionCodec(keyring, max_payload_bytes=max_payload_bytes),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def converter_for(settings: Settings, *, sends_commands: bool, keyring: Keyring | None = None) -> DataConverter:
    """The converter from the configured keys. Only a client that sends commands (the CLI)
    gets the size limit: in a worker it would make a workflow task fail for ever."""
    return data_converter(
        keyring or settings.keyring(),
        max_payload_bytes=settings.max_payload_bytes if sends_commands else None,
    )


async def connect(
    address: str, namespace: str, *, data_converter: DataConverter, runtime: Runtime | None = None, tls: TLSConfig | bool = False
) -> Client:
    """`runtime`: the one exporting metrics (mentorflow.metrics.metrics_runtime), for a worker.
    `tls`: `Settings.temporal_tls()` (mTLS to a production cluster)."""
    return await Client.connect(address, namespace=namespace, data_converter=data_converter, runtime=runtime, tls=tls)


def run_and_exit(main: Coroutine[Any, Any, object]) -> NoReturn:
    """Run a client script's `main()` and end the process: exit status 0, or 1 after printing
    the traceback of whatever `main` raised (a `SystemExit` keeps its code). Use it instead of
    `asyncio.run(main())` as the last line of a short script that uses a Temporal client.

    Why: the Temporal SDK's native threads outlive the client, and when one touches Python
    while the interpreter finalizes, the process aborts with "Fatal Python error:
    PyGILState_Release" and exit status 134 (sdk-python#300; about one run in two of a short
    script here). This ends the process without finalizing the interpreter (`os._exit`),
    after flushing stdout, stderr and the logging handlers; `atexit` functions do not run,
    so close files and connections inside `main`. The `mentorflow` command exits this way too.
    """
    try:
        asyncio.run(main)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing more can be said
            pass
    os._exit(code)


def __getattr__(name: str) -> Any:
    # A plain module-level converter would silently skip encryption; say what replaced it.
    if name == "DATA_CONVERTER":
        raise ImportError(
            "mentorflow.client.DATA_CONVERTER is gone: payloads are encrypted now; build one with "
            "data_converter(keyring) or converter_for(settings, ...) (tests: tests.support.session.DATA_CONVERTER)"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dev_server_flags() -> list[str]:
    """`temporal server start-dev` flags that register our search attributes."""
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}={type_name(key)}"]
    return flags


def type_name(key: SearchAttributeKey) -> str:  # type: ignore[type-arg]
    """The type as the server and the `temporal` CLI spell it: Keyword, Datetime, Double, …"""
    proto_name = IndexedValueType.Name(IndexedValueType.ValueType(int(key.indexed_value_type)))
    return proto_name.removeprefix("INDEXED_VALUE_TYPE_").title().replace("_", "")


def search_attribute_types() -> dict[str, IndexedValueType.ValueType]:
    return {key.name: IndexedValueType.ValueType(int(key.indexed_value_type)) for key in ALL_KEYS}


async def register_search_attributes(client: Client, namespace: str) -> list[str]:
    """Add whichever of our search attributes the namespace lacks; returns the names added."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        name: value_type
        for name, value_type in search_attribute_types().items()
        if name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)
