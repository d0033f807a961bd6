"""Adapters to what runs deliveries: Step Functions (slot and retry executions) and the
sender Lambdas (asynchronous invokes).

- A **slot execution** (`statemachine/slot.asl.json`) waits until its one-second slot, then its
  delivery step hands every batch due in that slot to the senders. Named `slot-<epoch>`: a
  repeated start is harmless, and the notify path calls StartExecution at most once per slot.
- A **retry execution** (`statemachine/retry.asl.json`) exists only for a push whose first
  attempt failed transiently: it retries with the backend's backoff and records a final failure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from mxpush.errors import SchedulerUnavailable

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_stepfunctions import SFNClient


def slot_execution_name(slot: int) -> str:
    return f"slot-{slot}"


def slot_input(slot: int) -> dict[str, Any]:
    """The Wait state's timestamp, and the slot its delivery step reads."""
    at = datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"slot": slot, "at": at}


class StepFunctionsScheduler:
    def __init__(self, client: SFNClient, slot_machine_arn: str, retry_machine_arn: str) -> None:
        self._client = client
        self.slot_machine_arn = slot_machine_arn
        self.retry_machine_arn = retry_machine_arn

    def start_slot(self, slot: int) -> None:
        self._start(self.slot_machine_arn, slot_execution_name(slot), slot_input(slot))

    def start_retry(self, name: str, payload: Mapping[str, Any]) -> None:
        self._start(self.retry_machine_arn, name, payload)

    def _start(self, machine: str, name: str, payload: Mapping[str, Any]) -> None:
        """Already started (running or finished) counts as done: an earlier attempt did it."""
        try:
            self._client.start_execution(
                stateMachineArn=machine,
                name=name,
                input=json.dumps(payload, separators=(",", ":"), sort_keys=True),
            )
        except ClientError as exc:
            if _code(exc) == "ExecutionAlreadyExists":
                return
            raise SchedulerUnavailable(f"StartExecution failed ({_code(exc)})") from None
        except BotoCoreError as exc:
            raise SchedulerUnavailable(f"StartExecution failed ({type(exc).__name__})") from None


class LambdaSenders:
    """Invokes a backend's sender function asynchronously (`InvocationType=Event`): Lambda
    queues the event, retries a failed run twice, then hands it to the on-failure destination
    (the record function, which logs the batches `failed`)."""

    # Batches per invoke: a sender pushes them concurrently, well inside its timeout.
    CHUNK = 10

    def __init__(self, client: LambdaClient, functions: Mapping[str, str]) -> None:
        self._client = client
        self.functions = dict(functions)

    def invoke(self, backend: str, batches: list[dict[str, str]]) -> None:
        function = self.functions.get(backend)
        if function is None:
            raise SchedulerUnavailable(f"no sender function for backend {backend!r}")
        for start in range(0, len(batches), self.CHUNK):
            payload = {"backend": backend, "batches": batches[start : start + self.CHUNK]}
            try:
                self._client.invoke(
                    FunctionName=function,
                    InvocationType="Event",
                    Payload=json.dumps(payload, separators=(",", ":")).encode(),
                )
            except ClientError as exc:
                raise SchedulerUnavailable(f"Lambda Invoke failed ({_code(exc)})") from None
            except BotoCoreError as exc:
                raise SchedulerUnavailable(f"Lambda Invoke failed ({type(exc).__name__})") from None


def parse_functions(value: str) -> dict[str, str]:
    """`MXPUSH_SENDER_FUNCTIONS`: a JSON object, backend name -> function name or ARN."""
    if not value.strip():
        return {}
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise ValueError("must be a JSON object")  # noqa: TRY004 - a setting's value, not a type
    return {str(k): str(v) for k, v in parsed.items()}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))
