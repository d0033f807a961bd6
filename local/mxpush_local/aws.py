"""AWS in-process, with moto: the template's table, and the template's state machines run by
moto's ASL interpreter, their Lambda tasks dispatched to the real handler functions.
Asynchronous invokes (`InvocationType=Event`) run on a thread pool with Lambda's retries and
on-failure destination; scheduled functions (the sweep) run on a timer.

Only one `LocalAws` may run per process (moto patches botocore process-wide).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.dynamodb.exceptions import MockValidationException
from moto.dynamodb.responses import DynamoHandler
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp import Timestamp
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

from mxpush.model import Outcome
from mxpush_local.state import Journal
from mxpush_local.template import FunctionSpec, Template

REGION = "us-east-1"
# DynamoDB's limit on each expression of a request.
MAX_EXPRESSION_BYTES = 4096
ACCOUNT = "123456789012"
log = logging.getLogger("mxpush_local")

Handler = Callable[[dict[str, Any], Any], Any]
# Lambda retries a failed asynchronous invocation twice (after about 1 and 2 minutes; here
# seconds), then sends it to the function's on-failure destination.
ASYNC_RETRY_DELAYS = (1.0, 2.0)
ON_FAILURE_DESTINATION = "RecordOutcomeFunction"


def function_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical_id}"


@dataclass
class FakeLambdaContext:
    """The attributes of the Lambda context object the handlers (powertools) read."""

    function_name: str
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deadline: float = field(default_factory=lambda: time.time() + 30)

    @property
    def invoked_function_arn(self) -> str:
        return function_arn(self.function_name)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


class Functions:
    """The template's Lambda handlers, imported from their CodeUri as Lambda would."""

    def __init__(self, specs: Mapping[str, FunctionSpec]) -> None:
        self.specs = dict(specs)
        self._handlers: dict[str, Handler] = {}
        # Concurrent first invocations must not see a half-imported module.
        self._loading = threading.Lock()
        # Fault injection for tests: logical id -> callable run before the handler.
        self.before_invoke: dict[str, Callable[[dict[str, Any]], None]] = {}

    def handler(self, logical_id: str) -> Handler:
        found = self._handlers.get(logical_id)
        if found is not None:
            return found
        with self._loading:
            if logical_id not in self._handlers:
                spec = self.specs[logical_id]
                module_name, _, function_name = spec.handler.rpartition(".")
                module = _import_file(module_name, spec.code_uri / f"{module_name}.py")
                self._handlers[logical_id] = getattr(module, function_name)
            return self._handlers[logical_id]

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        hook = self.before_invoke.get(logical_id)
        if hook is not None:
            hook(event)
        return self.handler(logical_id)(event, FakeLambdaContext(logical_id))


class LocalAws:
    """moto's DynamoDB and Step Functions, set up from the template."""

    def __init__(self, template: Template, *, table_name: str = "mxpush") -> None:
        self.template = template
        self.table_name = table_name
        self.functions = Functions(template.functions)
        # Logical id -> ARN of each state machine.
        self.state_machine_arns: dict[str, str] = {}
        self._mock = mock_aws(
            config={
                "stepfunctions": {"execute_state_machine": True},
                "lambda": {"use_docker": False},
            }
        )
        self._saved_invoke: Any = None
        self._saved_call_action: Any = None
        self._saved_worker_stop: Any = None
        self._saved_timestamp_eval: Any = None
        self.lambda_invocations: list[tuple[str, dict[str, Any]]] = []
        self._async_pool: ThreadPoolExecutor | None = None
        self._timers_stop = threading.Event()
        self._timers: list[threading.Thread] = []
        # Run scheduled functions (the sweep) on their template rate; tests drive them by hand.
        self.run_schedules = True
        # Where the table is kept across restarts (`state.py`); None: in memory only.
        self.journal: Journal | None = None

    @property
    def state_machine_arn(self) -> str:
        """The slot state machine (the one the notify path starts)."""
        return self.state_machine_arns["SlotStateMachine"]

    def start(self) -> None:
        self._mock.start()
        self._async_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="lambda-async")
        self._patch_lambda()
        self._serialize_dynamodb()
        self._allow_immediate_stop()
        self._precise_timestamp_wait()
        self._create_table()
        self._load_journal()
        self._create_state_machines()
        if self.run_schedules:
            self._start_timers()

    def environment(self) -> dict[str, str]:
        """What the template passes the functions about each other (names, state machines)."""
        env: dict[str, str] = {}
        for spec in self.template.functions.values():
            env.update(spec.environment)
        env["MXPUSH_SLOT_MACHINE_ARN"] = self.state_machine_arns.get("SlotStateMachine", "")
        env["MXPUSH_RETRY_MACHINE_ARN"] = self.state_machine_arns.get("RetryStateMachine", "")
        return env

    def stop(self) -> None:
        self._timers_stop.set()
        for timer in self._timers:
            timer.join(timeout=5)
        if self._async_pool is not None:
            self._async_pool.shutdown(wait=False, cancel_futures=True)
        self._mock.stop()
        if self.journal is not None:
            self.journal.close()
        if self._saved_invoke is not None:
            LambdaSimpleBackend.invoke = self._saved_invoke  # type: ignore[method-assign]
        if self._saved_call_action is not None:
            DynamoHandler.call_action = self._saved_call_action  # type: ignore[method-assign]
        if self._saved_worker_stop is not None:
            ExecutionWorker.stop = self._saved_worker_stop  # type: ignore[method-assign]
        if self._saved_timestamp_eval is not None:
            Timestamp._eval_body = self._saved_timestamp_eval  # type: ignore[method-assign]

    def stop_running_executions(self) -> None:
        """Stop every execution still running (tests: none outlives the test that started it)."""
        client = boto3.client("stepfunctions", region_name=REGION)
        for arn in self.state_machine_arns.values():
            pages = client.get_paginator("list_executions").paginate(
                stateMachineArn=arn, statusFilter="RUNNING"
            )
            for page in pages:
                for execution in page["executions"]:
                    with suppress(client.exceptions.ExecutionDoesNotExist):
                        client.stop_execution(executionArn=execution["executionArn"])

    def abandon_pending_deliveries(self) -> None:
        """Tests: let no push of a test that ended reach a fake server it left (whose port the
        OS may give to a later test's fake). Slot executions are shared by everything due in
        their second, so they run on; the batches they would deliver are cancelled instead.
        Retry executions belong to one push each: stopped."""
        from mxpush import wiring  # noqa: PLC0415 - after the environment is set

        client = boto3.client("stepfunctions", region_name=REGION)
        store = wiring.store()
        for logical_id, arn in self.state_machine_arns.items():
            pages = client.get_paginator("list_executions").paginate(
                stateMachineArn=arn, statusFilter="RUNNING"
            )
            for page in pages:
                for execution in page["executions"]:
                    if logical_id == "SlotStateMachine":
                        slot = int(execution["name"].removeprefix("slot-"))
                        for entry in store.due_entries(slot):
                            store.finish_batch(
                                entry.rid,
                                entry.sk,
                                token=None,
                                outcome=Outcome.CANCELLED,
                                reason="test ended",
                                now=time.time(),
                            )
                    else:
                        with suppress(client.exceptions.ExecutionDoesNotExist):
                            client.stop_execution(executionArn=execution["executionArn"])

    def invoke_async(self, logical_id: str, event: dict[str, Any]) -> None:
        """What Lambda does with an `InvocationType=Event` invoke: run it later, retry a failure
        twice, then hand the event to the on-failure destination."""
        if self._async_pool is None:
            raise RuntimeError("not started")
        self._async_pool.submit(self._run_async, logical_id, event)

    def _run_async(self, logical_id: str, event: dict[str, Any]) -> None:
        error: Exception | None = None
        for delay in (0.0, *ASYNC_RETRY_DELAYS):
            if delay and self._timers_stop.wait(delay):
                return
            try:
                self.functions.invoke(logical_id, event)
            except Exception as exc:  # noqa: BLE001 - Lambda catches everything a function raises
                log.warning("asynchronous invocation of %s failed: %r", logical_id, exc)
                error = exc
                continue
            return
        if ON_FAILURE_DESTINATION in self.functions.specs and error is not None:
            record = {
                "version": "1.0",
                "requestContext": {
                    "functionArn": function_arn(logical_id),
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": 1 + len(ASYNC_RETRY_DELAYS),
                },
                "requestPayload": event,
                "responsePayload": {"errorType": type(error).__name__, "errorMessage": str(error)},
            }
            with suppress(Exception):
                self.functions.invoke(ON_FAILURE_DESTINATION, record)

    def _start_timers(self) -> None:
        for spec in self.template.functions.values():
            for seconds in spec.schedules:
                thread = threading.Thread(
                    target=self._every,
                    args=(spec.logical_id, seconds),
                    name=f"schedule-{spec.logical_id}",
                    daemon=True,
                )
                thread.start()
                self._timers.append(thread)

    def _every(self, logical_id: str, seconds: int) -> None:
        while not self._timers_stop.wait(seconds):
            try:
                self.functions.invoke(logical_id, {"source": "aws.events"})
            except Exception:
                log.exception("scheduled run of %s failed", logical_id)

    # --- setup --------------------------------------------------------------------------------

    def _create_table(self) -> None:
        props = self.template.table_properties
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            client.update_time_to_live(TableName=self.table_name, TimeToLiveSpecification=ttl)

    def _create_state_machines(self) -> None:
        client = boto3.client("stepfunctions", region_name=REGION)
        for spec in self.template.state_machines.values():
            definition = spec.definition_path.read_text(encoding="utf-8")
            for name, logical_id in spec.function_substitutions.items():
                definition = definition.replace("${" + name + "}", function_arn(logical_id))
            json.loads(definition)  # fail here, clearly, if a substitution was missed
            self.state_machine_arns[spec.logical_id] = client.create_state_machine(
                name=spec.logical_id,
                definition=definition,
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/{spec.logical_id}Role",
                type="STANDARD",
            )["stateMachineArn"]

    def _patch_lambda(self) -> None:
        functions = self.functions
        invocations = self.lambda_invocations
        aws = self

        def invoke(  # noqa: PLR0917 - moto's signature
            backend: Any,
            function_name: str,
            qualifier: str | None,
            body: Any,
            headers: Any,
            response_headers: dict[str, str],
        ) -> bytes:
            logical_id = function_name.rsplit(":", 1)[-1]
            event = json.loads(body or "{}")
            invocations.append((logical_id, event))
            if (headers or {}).get("X-Amz-Invocation-Type") == "Event":
                aws.invoke_async(logical_id, event)
                return b""
            try:
                result = functions.invoke(logical_id, event)
            except Exception as exc:  # noqa: BLE001 - reported to the state machine as Lambda does
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps(
                    {"errorType": type(exc).__name__, "errorMessage": str(exc), "stackTrace": []}
                ).encode()
            return json.dumps(result).encode()

        self._saved_invoke = LambdaSimpleBackend.invoke
        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign,assignment]

    def _serialize_dynamodb(self) -> None:
        """Two ways moto's DynamoDB differs from AWS that matter here: it is not atomic across
        threads (the state machine runs in its own threads), and it does not enforce the 4 KB
        limit on expressions. Make each request atomic and refuse oversized expressions, as
        AWS does."""
        lock = threading.RLock()
        original = DynamoHandler.call_action
        aws = self

        def call_action(handler: Any) -> Any:
            refusal = _oversized_expression(handler.body)
            if refusal is not None:
                return refusal
            with lock:
                response = original(handler)
                aws._journal_write(handler, response)
                return response

        self._saved_call_action = original
        DynamoHandler.call_action = call_action  # type: ignore[method-assign]

    def _load_journal(self) -> None:
        """Fill the new table from the kept state, before anything reads it."""
        if self.journal is not None:
            self.journal.load()

    def _journal_write(self, handler: Any, response: Any) -> None:
        # Under the request lock: the journal sees each item as that request left it.
        if self.journal is not None:
            self.journal.record(handler, response)

    def _allow_immediate_stop(self) -> None:
        """moto's execution thread builds its environment after StartExecution returns; a
        StopExecution arriving in those milliseconds (a user reading at once) crashes inside moto
        (`None.set_stop`). AWS accepts it, so wait for the environment, then stop."""
        original = ExecutionWorker.stop

        def stop(worker: Any, stop_date: Any, error: str | None, cause: str | None) -> None:
            deadline = time.monotonic() + 2.0
            while worker.env is None and time.monotonic() < deadline:
                time.sleep(0.005)
            original(worker, stop_date=stop_date, error=error, cause=cause)

        self._saved_worker_stop = original
        ExecutionWorker.stop = stop  # type: ignore[method-assign,assignment]

    def _precise_timestamp_wait(self) -> None:
        """moto's Wait until a timestamp sleeps whole seconds and may wake up to a second early
        (it truncates); Step Functions never wakes early. Wait until the exact instant."""
        original = Timestamp._eval_body

        def eval_body(state: Any, env: Any) -> None:
            state.string.eval(env=env)
            raw = env.stack.pop()
            parsed = Timestamp._from_timestamp_string(raw) if isinstance(raw, str) else None
            if parsed is None:
                original(state, env)  # evaluates again, and fails as Step Functions would
                return
            target = parsed.replace(tzinfo=UTC).timestamp()
            while env.is_running():
                remaining = target - time.time()
                if remaining <= 0:
                    return
                if env.program_state_event.wait(remaining):
                    time.sleep(0.01)  # woken for another reason: keep waiting if still running

        self._saved_timestamp_eval = original
        Timestamp._eval_body = eval_body  # type: ignore[method-assign,assignment]


def _oversized_expression(body: Any) -> tuple[int, dict[str, str], str] | None:
    try:
        request = json.loads(body or "{}")
    except (TypeError, ValueError):
        return None
    for key in ("UpdateExpression", "ConditionExpression", "KeyConditionExpression"):
        expression = request.get(key) if isinstance(request, dict) else None
        if isinstance(expression, str) and len(expression.encode()) > MAX_EXPRESSION_BYTES:
            error = MockValidationException(
                f"Invalid {key}: Expression size has exceeded the maximum allowed size; "
                f"expression size: {len(expression.encode())}"
            )
            return error.code, {"Content-Type": "application/x-amz-json-1.0"}, error.description
    return None


def _import_file(module_name: str, path: Path) -> ModuleType:
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
