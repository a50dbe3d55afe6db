"""Which workflow runner a worker uses: the sandbox only when MENTORFLOW_WORKFLOW_SANDBOX is on."""

from __future__ import annotations

import pytest
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from mentorflow.config import ConfigurationError, Settings
from worker import workflow_runner


def test_production_default_runs_workflows_outside_the_sandbox() -> None:
    assert isinstance(workflow_runner(Settings.from_env({})), UnsandboxedWorkflowRunner)


@pytest.mark.parametrize("value", ["true", "1", "on", "yes"])
def test_the_variable_turns_the_sandbox_on(value: str) -> None:
    settings = Settings.from_env({"MENTORFLOW_WORKFLOW_SANDBOX": value})
    assert isinstance(workflow_runner(settings), SandboxedWorkflowRunner)


def test_the_test_suite_runs_workflows_in_the_sandbox() -> None:
    # tests/conftest.py sets it, so workers built from the environment check workflow code.
    assert isinstance(workflow_runner(Settings.from_env()), SandboxedWorkflowRunner)


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="MENTORFLOW_WORKFLOW_SANDBOX"):
        Settings.from_env({"MENTORFLOW_WORKFLOW_SANDBOX": "sometimes"})
