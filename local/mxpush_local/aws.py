"""AWS in-process, with moto: the template's table, and the template's state machines run by
moto's ASL interpreter, their Lambda tasks dispatched to the real handler functions.
Asynchronous invokes (`InvocationType=Event`) run on a thread pool with Lambda's retries and
on-failure destination; scheduled functions (the sweep) run on a timer.

Only one `LocalAws` may run per process (moto patches botocore process-wide).
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import inspect
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.core import responses as moto_responses
from moto.dynamodb.exceptions import MockValidationException
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler, DynamoResult
from moto.stepfunctions.exceptions import ExecutionAlreadyExists
from moto.stepfunctions.models import StateMachine
from moto.stepfunctions.parser import utils as sfn_utils
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp import Timestamp
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker
from moto.stepfunctions.parser.models import stepfunctions_parser_backends

from mxpush.model import Outcome
from mxpush_local import cold, resting, speedups
from mxpush_local.dynamodb_direct import InProcessDynamoDB, internal_error
from mxpush_local.state import Journal
from mxpush_local.template import FunctionSpec, Template
from mxpush_local.untracked import forget_model_instances

REGION = "us-east-1"
# DynamoDB's limit on each expression of a request.
MAX_EXPRESSION_BYTES = 4096
# A request's expressions, and the placeholders they name (DynamoDB's tokens: no string
# literal in an expression can hold one).
_EXPRESSIONS = (
    "KeyConditionExpression",
    "FilterExpression",
    "ConditionExpression",
    "UpdateExpression",
    "ProjectionExpression",
)
_NAME_PLACEHOLDER = re.compile(r"#[A-Za-z0-9_]+")
_VALUE_PLACEHOLDER = re.compile(r":[A-Za-z0-9_]+")
ACCOUNT = "123456789012"
log = logging.getLogger("mxpush_local")

Handler = Callable[[dict[str, Any], Any], Any]
# Lambda retries a failed asynchronous invocation twice (after about 1 and 2 minutes; here
# seconds), then sends it to the function's on-failure destination.
ASYNC_RETRY_DELAYS = (1.0, 2.0)
ON_FAILURE_DESTINATION = "RecordOutcomeFunction"
# Finished executions (and their histories) are dropped from moto this long after they end:
# moto keeps every one forever, and each StartExecution and lookup walks them all. Recent ones
# stay for tests that read a history. Their names stay taken, as Step Functions keeps them.
# (Each holds its history and environment: at 50 notifications/s, the more of them are kept,
# the higher the peaks RSS keeps.)
KEEP_FINISHED_EXECUTIONS_SECONDS = 30.0
RELEASE_EVERY_SECONDS = 10.0
KEPT_LAMBDA_INVOCATIONS = 1000
# DynamoDB deletes items whose TTL attribute has passed (within days); moto never does, so a
# long local run would hold every delivery-log record forever. The same pass packs the items
# that did not change since the previous one (`resting.py`): every 20 s, an item is packed
# 20-40 s after its last change (a pass over a packed item costs ~0.5 µs).
EXPIRE_EVERY_SECONDS = 20.0
# TTL ignores timestamps more than five years in the past.
TTL_IGNORED_BEFORE_SECONDS = 5 * 365 * 24 * 3600
# Partitions examined per hold of the DynamoDB lock: requests wait for no longer.
EXPIRE_PARTITIONS_PER_HOLD = 200
# DynamoDB's item operations, whose results moto builds as plain JSON already.
PLAIN_JSON_ACTIONS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)


class FunctionTimedOut(Exception):
    """What Lambda reports for an invocation that ran past the function's Timeout."""

    def __init__(self, logical_id: str, seconds: float) -> None:
        super().__init__(f"{logical_id}: Task timed out after {seconds:.2f} seconds")


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


# Background invocations (asynchronous invokes, Step Functions tasks, schedules) of one function
# that run at once in local mode; more wait in line. A sender runs up to 8 pushes in parallel.
CONCURRENT_INVOCATIONS = 4


class Functions:
    """The template's Lambda handlers, imported from their CodeUri as Lambda would."""

    def __init__(self, specs: Mapping[str, FunctionSpec]) -> None:
        self.specs = dict(specs)
        self._handlers: dict[str, Handler] = {}
        # Concurrent first invocations must not see a half-imported module.
        self._loading = threading.Lock()
        # Fault injection for tests: logical id -> callable run before the handler.
        self.before_invoke: dict[str, Callable[[dict[str, Any]], None]] = {}
        # Tests: logical id -> seconds, in place of the template's Timeout.
        self.timeouts: dict[str, float] = {}
        # Each function's background invocations that may run at once (see invoke_with_deadline).
        self._running = {
            logical_id: threading.BoundedSemaphore(CONCURRENT_INVOCATIONS) for logical_id in specs
        }

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
        """Run the handler in the calling thread (an API route: API Gateway waits for it). A
        run past the function's Timeout fails as Lambda's would, once it ends."""
        timeout = self._timeout(logical_id)
        started = time.monotonic()
        result = self._run(logical_id, event, timeout)
        if time.monotonic() - started > timeout:
            log.warning("%s ran past its timeout of %.1f s", logical_id, timeout)
            raise FunctionTimedOut(logical_id, timeout)
        return result

    def invoke_with_deadline(self, logical_id: str, event: dict[str, Any]) -> Any:
        """Run the handler as Lambda does for Step Functions and asynchronous invokes: the
        caller gets `FunctionTimedOut` at the Timeout. Lambda would also freeze the attempt; a
        thread cannot be stopped, so the late one runs on until its own calls end (OutboundHttp's
        connect and read timeouts, well inside any sender's Timeout). It cannot push a batch a
        second time: its claim holds the batch for CLAIM_LEASE_SECONDS (90 s), longer than any
        Timeout, so a retry of the attempt finds the batch held and leaves it."""
        timeout = self._timeout(logical_id)
        outcome: list[tuple[bool, Any]] = []
        # At most CONCURRENT_INVOCATIONS of one function run at once; the next waits for one to
        # end (its Timeout counts from its start). Lambda would run them side by side in more
        # containers; one process has one GIL, and work that waits in line holds a thread, not
        # a running handler's threads and objects (a backlog once took 300 threads and 45 MB).
        running = self._running[logical_id]
        running.acquire()

        def run() -> None:
            try:
                outcome.append((True, self._run(logical_id, event, timeout)))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                outcome.append((False, exc))
            finally:
                running.release()  # when the handler ends: one past its timeout still runs

        worker = threading.Thread(target=run, name=f"lambda-{logical_id}", daemon=True)
        worker.start()
        worker.join(timeout)
        if not outcome:
            log.warning("%s ran past its timeout of %.1f s", logical_id, timeout)
            raise FunctionTimedOut(logical_id, timeout)
        succeeded, value = outcome[0]
        if not succeeded:
            raise value
        return value

    def _timeout(self, logical_id: str) -> float:
        return self.timeouts.get(logical_id) or float(self.specs[logical_id].timeout)

    def _run(self, logical_id: str, event: dict[str, Any], timeout: float) -> Any:
        hook = self.before_invoke.get(logical_id)
        if hook is not None:
            hook(event)
        context = FakeLambdaContext(logical_id, deadline=time.time() + timeout)
        return self.handler(logical_id)(event, context)


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
        # Held by every DynamoDB request (moto's tables are not thread-safe).
        self._dynamodb_lock = threading.RLock()
        self._saved_worker_stop: Any = None
        self._saved_timestamp_eval: Any = None
        self._saved_query: Any = None
        self._saved_all_items: Any = None
        self._saved_parse: Any = None
        self._saved_name_check: Any = None
        self._saved_dynamo_result: Any = None
        self._saved_task_client: Any = None
        self._saved_method_names: Any = None
        self._in_process_dynamodb: InProcessDynamoDB | None = None
        # State machine ARN -> names of the executions released (kept taken).
        self._released_names: dict[str, set[str]] = {}
        # The latest Lambda invokes through moto (bounded: a long run makes millions).
        self.lambda_invocations: deque[tuple[str, dict[str, Any]]] = deque(
            maxlen=KEPT_LAMBDA_INVOCATIONS
        )
        self._async_pool: ThreadPoolExecutor | None = None
        self._timers_stop = threading.Event()
        self._timers: list[threading.Thread] = []
        # Run scheduled functions (the sweep) on their template rate; tests drive them by hand.
        self.run_schedules = True
        # Finished executions older than this are dropped (memory); a bench that reads every
        # execution's history at the end keeps them longer.
        self.keep_finished_executions_seconds = KEEP_FINISHED_EXECUTIONS_SECONDS
        # Where the table is kept across restarts (`state.py`); None: in memory only.
        self.journal: Journal | None = None
        self._speedups_installed = False
        # Items idle since the last expiry pass are kept compact (`resting.py`).
        self.resting: resting.Sweeper | None = resting.Sweeper()

    @property
    def state_machine_arn(self) -> str:
        """The slot state machine (the one the notify path starts)."""
        return self.state_machine_arns["SlotStateMachine"]

    def start(self) -> None:
        self._mock.start()
        forget_model_instances()
        self._async_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="lambda-async")
        self._patch_lambda()
        self._serialize_dynamodb()
        self._answer_dynamodb_in_process()
        self._allow_immediate_stop()
        self._precise_timestamp_wait()
        self._query_one_partition()
        self._encode_item_results_directly()
        self._parse_definitions_once()
        self._reuse_task_clients()
        self._list_handler_methods_once()
        self._keep_released_names_taken()
        speedups.install()
        self._speedups_installed = True
        self._create_table()
        self._load_journal()
        self._create_state_machines()
        if self.run_schedules:
            self._start_timers()
            self._start_expiry_timer()
        self._start_release_timer()

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
        if self._in_process_dynamodb is not None:
            self._in_process_dynamodb.uninstall()
        if self._saved_worker_stop is not None:
            ExecutionWorker.stop = self._saved_worker_stop  # type: ignore[method-assign]
        if self._saved_timestamp_eval is not None:
            Timestamp._eval_body = self._saved_timestamp_eval  # type: ignore[method-assign]
        if self._speedups_installed:
            speedups.uninstall()
            self._speedups_installed = False
        if self._saved_query is not None:
            Table.query = self._saved_query  # type: ignore[method-assign]
            Table.all_items = self._saved_all_items  # type: ignore[method-assign]
        if self._saved_dynamo_result is not None:
            DynamoResult.execute_result = self._saved_dynamo_result  # type: ignore[method-assign]
        if self._saved_method_names is not None:
            moto_responses.method_names_from_class = self._saved_method_names  # type: ignore[attr-defined]
        if self._saved_task_client is not None:
            lambda_eval_utils.boto_client_for = self._saved_task_client  # type: ignore[attr-defined]
        if self._saved_parse is not None:
            AmazonStateLanguageParser.parse = self._saved_parse  # type: ignore[method-assign]
        if self._saved_name_check is not None:
            StateMachine._handle_name_input_idempotency = self._saved_name_check  # type: ignore[method-assign]

    @contextmanager
    def moto_as_is(self) -> Iterator[None]:
        """Tests: moto's own DynamoDB query, result encoding and definition parsing, and
        moto's and botocore's own functions (`speedups.py`), in place of the faster ones here,
        to compare the two."""
        patched = (
            (Table, "query", self._saved_query),
            (Table, "all_items", self._saved_all_items),
            (DynamoResult, "execute_result", self._saved_dynamo_result),
            (AmazonStateLanguageParser, "parse", self._saved_parse),
        )
        current = [(owner, name, owner.__dict__[name]) for owner, name, _ in patched]
        direct = self._in_process_dynamodb
        try:
            for owner, name, original in patched:
                setattr(owner, name, original)
            if direct is not None:
                direct.uninstall()
            with speedups.moto_as_is():
                yield
        finally:
            for owner, name, value in current:
                setattr(owner, name, value)
            if direct is not None:
                direct.install()

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
        from mxpush.store.models import parse_channel_ref  # noqa: PLC0415

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
                                parse_channel_ref(entry.sk)[0],
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
                self.functions.invoke_with_deadline(logical_id, event)
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
                self.functions.invoke_with_deadline(ON_FAILURE_DESTINATION, record)

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
                self.functions.invoke_with_deadline(logical_id, {"source": "aws.events"})
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
        table = _moto_table(self.table_name)
        if table.range_key_attr and self.resting is not None:
            # Partitions that can keep idle items cold (`cold.py`).
            table.items.default_factory = cold.Partition

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
                result = functions.invoke_with_deadline(logical_id, event)
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
        lock = self._dynamodb_lock
        original = DynamoHandler.call_action
        aws = self

        def call_action(handler: Any) -> Any:
            refusal = _refused_request(handler.body)
            if refusal is not None:
                return refusal
            with lock:
                try:
                    response = original(handler)
                except Exception as error:  # noqa: BLE001 - logged by internal_error
                    return internal_error(error)  # as on the in-process path
                aws._journal_write(handler, response)
                return response

        self._saved_call_action = original
        DynamoHandler.call_action = call_action  # type: ignore[method-assign]

    def _answer_dynamodb_in_process(self) -> None:
        """Data-plane requests skip the HTTP detour through moto's stub (see
        `dynamodb_direct`): the same moto actions, under the same lock, journal and limits."""

        self._in_process_dynamodb = InProcessDynamoDB(
            account=ACCOUNT,
            region=REGION,
            lock=self._dynamodb_lock,
            refuse=_refused_request,
            after_request=self._journal_write,
        )
        self._in_process_dynamodb.install()

    def _load_journal(self) -> None:
        """Fill the new table from the kept state, before anything reads it."""
        if self.journal is not None:
            self.journal.load()
            self.rest_items(self.journal.table_name, now=True)

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

    # --- holding a homeserver's load (moto keeps everything, and scans for everything) -----

    def _query_one_partition(self) -> None:
        """moto answers a Query on the table by sorting every item of the table, then keeping
        the partition's: a cost that grows with the table, on the notify path. Hand it the
        partition alone (Queries on an index keep moto's way)."""
        original_query = Table.query
        original_all_items = Table.all_items
        signature = inspect.signature(original_query)
        partition_only = threading.local()

        def query(table: Any, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(table, *args, **kwargs)
            index_name = bound.arguments.get("index_name")
            if index_name:
                # moto tests every item of the table for the index's keys: not the packed
                # items that lack them (it would expand them all; they would not match).
                partition_only.index_keys = resting.index_key_names(table, index_name)
                try:
                    return original_query(table, *args, **kwargs)
                finally:
                    partition_only.index_keys = None
            if bound.arguments.get("hash_key") is None:
                return original_query(table, *args, **kwargs)
            partition_only.key = bound.arguments["hash_key"]
            try:
                return original_query(table, *args, **kwargs)
            finally:
                partition_only.key = None

        def all_items(table: Any) -> Any:
            key = getattr(partition_only, "key", None)
            if key is None:
                names = getattr(partition_only, "index_keys", None)
                if names:
                    return _index_candidates(table, names)
                return original_all_items(table)
            partition = table.items.get(key)
            if partition is None:
                return []
            return list(partition.values()) if table.range_key_attr else [partition]

        self._saved_query = original_query
        self._saved_all_items = original_all_items
        Table.query = query  # type: ignore[method-assign,assignment]
        Table.all_items = all_items  # type: ignore[method-assign,assignment]

    def _encode_item_results_directly(self) -> None:
        """moto turns every result into JSON through a generic serializer that walks the
        botocore model shape by shape (~40% of a GetItem's time). An item operation's result is
        plain JSON already (attribute values as {"S": ...}): dump it as it is."""
        original = DynamoResult.execute_result

        def execute_result(result: Any, context: Any) -> Any:
            value = result.result
            if context.operation_model.name not in PLAIN_JSON_ACTIONS or not isinstance(
                value, dict
            ):
                return original(result, context)
            plain = {key: item for key, item in value.items() if item is not None}
            body = json.dumps(plain, default=_json_value, separators=(",", ":"))
            return 200, {"Content-Type": "application/x-amz-json-1.0"}, body

        self._saved_dynamo_result = original
        DynamoResult.execute_result = execute_result  # type: ignore[method-assign,assignment]

    def _parse_definitions_once(self) -> None:
        """moto parses the state machine's definition (ANTLR, ~50 ms) for every execution;
        parse each definition once. The parsed program holds no state of an execution (that
        lives in each execution's environment), so executions can share it."""
        original = AmazonStateLanguageParser.__dict__["parse"]  # the staticmethod itself
        cached = functools.lru_cache(maxsize=16)(original.__func__)
        self._saved_parse = original
        AmazonStateLanguageParser.parse = staticmethod(cached)  # type: ignore[method-assign]

    def _reuse_task_clients(self) -> None:
        """moto's Lambda task makes a new boto3 client for every invocation (~10 ms: botocore
        loads the service model and copies its event hooks each time). Clients are thread-safe
        and moto's take no per-state credentials: make one per region."""
        original = lambda_eval_utils.boto_client_for  # type: ignore[attr-defined]
        clients: dict[tuple[str, str], Any] = {}
        making = threading.Lock()

        def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
            found = clients.get((region, service))
            if found is None:
                with making:
                    found = clients.get((region, service))
                    if found is None:
                        found = original(region, service, state_credentials)
                        clients[(region, service)] = found
            return found

        self._saved_task_client = original
        lambda_eval_utils.boto_client_for = boto_client_for  # type: ignore[attr-defined]

    def _list_handler_methods_once(self) -> None:
        """moto lists a response class's methods (inspect.getmembers) on every request; they
        never change: list them once per class."""
        original = moto_responses.method_names_from_class  # type: ignore[attr-defined]
        self._saved_method_names = original
        moto_responses.method_names_from_class = functools.lru_cache(maxsize=None)(original)  # type: ignore[attr-defined]

    def _keep_released_names_taken(self) -> None:
        """Step Functions refuses a second execution of a name for 90 days: so does moto, while
        it keeps the execution. Keep refusing after `release_finished_executions` dropped it."""
        original = StateMachine._handle_name_input_idempotency
        released = self._released_names

        def name_check(machine: Any, name: str, execution_input: str) -> Any:
            if name in released.get(machine.arn, ()):
                arn = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{machine.name}:{name}"
                raise ExecutionAlreadyExists(f"Execution Already Exists: '{arn}'")
            return original(machine, name, execution_input)

        self._saved_name_check = original
        StateMachine._handle_name_input_idempotency = name_check  # type: ignore[method-assign,assignment]

    def release_finished_executions(self, older_than: float) -> int:
        """Drop executions that ended more than `older_than` seconds ago, with their histories
        and threads; return how many."""
        backend = stepfunctions_parser_backends[ACCOUNT][REGION]
        cutoff = time.time() - older_than
        released = 0
        for machine in list(backend.state_machines):
            for execution in list(machine.executions):
                stopped = getattr(execution, "stop_date", None)
                if execution.status != "RUNNING" and stopped and stopped.timestamp() < cutoff:
                    self._released_names.setdefault(machine.arn, set()).add(execution.name)
                    # One by one, in place: StartExecution appends to this list meanwhile.
                    machine.executions.remove(execution)
                    # The execution and its worker refer to each other (through the worker's
                    # communication object): a cycle only a full collection would free, and
                    # local mode runs those rarely (`settle_collector`). Without the worker,
                    # the execution, its history and its environment are freed at once.
                    execution.exec_worker = None  # type: ignore[attr-defined]  # the parser's
                    released += 1
        sfn_utils.TMP_THREADS[:] = [t for t in sfn_utils.TMP_THREADS if t.is_alive()]
        # Model classes moto defined since the last pass keep nothing either (`untracked.py`).
        forget_model_instances()
        return released

    def expire_items(self, now: float) -> int:
        """Delete the table's items whose TTL attribute is past `now`, as DynamoDB's TTL does;
        return how many. The same pass packs the items idle since the last one (`resting`)."""
        attribute = self._ttl_attribute()
        if not attribute:
            return 0
        table = _moto_table(self.table_name)
        expired = 0
        for key in self._partitions_in_holds(table):
            partition = table.items.get(key)
            if partition is None:
                continue
            items: list[Any]
            if isinstance(partition, cold.Partition):
                # Cold items are read only once the earliest of their TTLs has passed.
                touched = partition.touched  # the pass's own reads are not a reader's
                at = partition.cold_expiry
                if at is not None and at < now:
                    partition.thaw()
                items = partition.warm_values()
            else:
                items = list(partition.values()) if table.range_key_attr else [partition]
            for item in items:
                if _expired(item, attribute, now):
                    table.delete_item(item.hash_key, item.range_key)
                    expired += 1
            if isinstance(partition, cold.Partition):
                partition.touched = touched  # nor are its deletions
            if table.range_key_attr and not partition:
                del table.items[key]
            elif self.resting is not None:
                self.resting.rest(table, key, attribute)
                cold.freeze(partition, key)
        return expired

    def rest_items(self, table_name: str, *, now: bool = False) -> int:
        """Pack the table's idle items (`now`: all of them); return how many were packed."""
        if self.resting is None:
            return 0
        table = _moto_table(table_name)
        attribute = self._ttl_attribute()
        packed = 0
        for key in self._partitions_in_holds(table):
            packed += self.resting.rest(table, key, attribute, now=now)
            if now:
                partition = table.items.get(key)
                if isinstance(partition, cold.Partition):
                    partition.touched = False  # loaded, read by nobody yet
                cold.freeze(partition, key)
        return packed

    def _partitions_in_holds(self, table: Any) -> Iterator[Any]:
        """The table's partition keys, each handed out with the DynamoDB lock held; the lock is
        let go every `EXPIRE_PARTITIONS_PER_HOLD` partitions, so requests wait no longer."""
        with self._dynamodb_lock:
            partitions = list(table.items.keys())
        for start in range(0, len(partitions), EXPIRE_PARTITIONS_PER_HOLD):
            with self._dynamodb_lock:
                yield from partitions[start : start + EXPIRE_PARTITIONS_PER_HOLD]

    def _ttl_attribute(self) -> str | None:
        spec = self.template.table_properties.get("TimeToLiveSpecification") or {}
        name = spec.get("AttributeName")
        return str(name) if name else None

    def _start_expiry_timer(self) -> None:
        def expire() -> None:
            while not self._timers_stop.wait(EXPIRE_EVERY_SECONDS):
                try:
                    self.expire_items(time.time())
                except Exception:
                    log.exception("expiring items failed")

        thread = threading.Thread(target=expire, name="ttl", daemon=True)
        thread.start()
        self._timers.append(thread)

    def _start_release_timer(self) -> None:
        def release() -> None:
            while not self._timers_stop.wait(RELEASE_EVERY_SECONDS):
                try:
                    self.release_finished_executions(self.keep_finished_executions_seconds)
                except Exception:
                    log.exception("releasing finished executions failed")

        thread = threading.Thread(target=release, name="release-executions", daemon=True)
        thread.start()
        self._timers.append(thread)


def _moto_table(name: str) -> Any:
    from moto.dynamodb.models import dynamodb_backends  # noqa: PLC0415 - moto's, once

    return dynamodb_backends[ACCOUNT][REGION].get_table(name)


def _index_candidates(table: Any, names: list[str]) -> list[Any]:
    """moto's `all_items` for a Query on an index with keys `names`: every item that may have
    them, in moto's order. A packed item that lacks them is not expanded, and a partition whose
    cold items all lack them (`cold.py`) is not thawed."""
    found: list[Any] = []
    for partition in list(table.items.values()):
        if not table.range_key_attr:
            if resting.may_have(partition, names):
                found.append(partition)
            continue
        if isinstance(partition, cold.Partition):
            if partition.cold_may_have(names):
                partition.thaw()
            items = partition.warm_values()
        else:
            items = list(partition.values())
        found.extend(item for item in items if resting.may_have(item, names))
    return sorted(found, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)


def _expired(item: Any, attribute: str, now: float) -> bool:
    at = resting.expiry(item, attribute)  # a packed item's is kept beside it
    return at is not None and now - TTL_IGNORED_BEFORE_SECONDS < at < now


def _json_value(value: Any) -> Any:
    """What DynamoDB's JSON protocol makes of the non-JSON values in moto's results."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} in a DynamoDB result")


def _refused_request(body: Any) -> tuple[int, dict[str, str], str] | None:
    """AWS's refusal of a request moto would run, or None: an expression past 4 KB, or an
    expression attribute name or value no expression of the request uses (DynamoDB refuses
    those in every operation; moto only in some, so such code would pass here and fail on AWS).
    `body`: the request's JSON, or its parameters parsed already."""
    if isinstance(body, dict):
        request: Any = body
    else:
        try:
            request = json.loads(body or "{}")
        except (TypeError, ValueError):
            return None
    if not isinstance(request, dict):
        return None
    error = _oversized_expression(request) or next(
        filter(None, map(_unused_placeholder, _expression_parts(request))), None
    )
    if error is None:
        return None
    return error.code, {"Content-Type": "application/x-amz-json-1.0"}, error.description


def _oversized_expression(request: dict[str, Any]) -> MockValidationException | None:
    for key in ("UpdateExpression", "ConditionExpression", "KeyConditionExpression"):
        expression = request.get(key)
        if isinstance(expression, str) and len(expression.encode()) > MAX_EXPRESSION_BYTES:
            return MockValidationException(
                f"Invalid {key}: Expression size has exceeded the maximum allowed size; "
                f"expression size: {len(expression.encode())}"
            )
    return None


def _expression_parts(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each part of a request with its own expressions and placeholders: the request, each
    action of a transaction, each table of a BatchGetItem."""
    yield request
    for action in request.get("TransactItems") or ():
        if isinstance(action, dict):
            yield from (part for part in action.values() if isinstance(part, dict))
    requested = request.get("RequestItems")
    if isinstance(requested, dict):
        yield from (part for part in requested.values() if isinstance(part, dict))


def _unused_placeholder(part: dict[str, Any]) -> MockValidationException | None:
    used = " ".join(
        expression for key in _EXPRESSIONS if isinstance(expression := part.get(key), str)
    )
    for kind, pattern in (("Names", _NAME_PLACEHOLDER), ("Values", _VALUE_PLACEHOLDER)):
        given = part.get(f"ExpressionAttribute{kind}")
        if not isinstance(given, dict) or not given:
            continue
        unused = sorted(set(given) - set(pattern.findall(used)))
        if unused:
            return MockValidationException(
                f"Value provided in ExpressionAttribute{kind} unused in expressions: "
                f"keys: {{{', '.join(unused)}}}"
            )
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
