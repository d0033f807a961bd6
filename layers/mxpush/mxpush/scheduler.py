"""The scheduler adapter: delivery batches as Step Functions Standard executions.

A batch's execution waits for the pushkey's delay, then runs its backend's sender. Its name is
the batch id, so its ARN is known without asking AWS, and a repeated start is harmless.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from mxpush.errors import SchedulerUnavailable

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient


class StepFunctionsScheduler:
    def __init__(self, client: SFNClient, state_machine_arn: str) -> None:
        self._client = client
        self.state_machine_arn = state_machine_arn

    def execution_arn(self, name: str) -> str:
        # arn:aws:states:REGION:ACCOUNT:stateMachine:NAME -> ...:execution:NAME:EXECUTION
        return self.state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name

    def start(self, name: str, payload: Mapping[str, Any]) -> None:
        """Start the execution `name`. Already started (running or finished) counts as done:
        the batch was scheduled by an earlier attempt."""
        try:
            self._client.start_execution(
                stateMachineArn=self.state_machine_arn,
                name=name,
                input=json.dumps(payload, separators=(",", ":"), sort_keys=True),
            )
        except ClientError as exc:
            if _code(exc) == "ExecutionAlreadyExists":
                return
            raise SchedulerUnavailable(f"StartExecution failed ({_code(exc)})") from None
        except BotoCoreError as exc:
            raise SchedulerUnavailable(f"StartExecution failed ({type(exc).__name__})") from None

    def stop(self, name: str, *, cause: str) -> None:
        """Stop the execution `name`; one that has already ended is fine."""
        try:
            self._client.stop_execution(executionArn=self.execution_arn(name), cause=cause)
        except ClientError as exc:
            if _code(exc) == "ExecutionDoesNotExist":
                return
            raise SchedulerUnavailable(f"StopExecution failed ({_code(exc)})") from None
        except BotoCoreError as exc:
            raise SchedulerUnavailable(f"StopExecution failed ({type(exc).__name__})") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))
