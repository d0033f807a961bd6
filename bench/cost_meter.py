"""Count what a local-mode replay consumes, without knowing how the engine is built: every AWS
API call in the process (all threads), DynamoDB capacity units as AWS bills them, and every
Lambda invocation with its duration.

- API calls: `botocore.client.BaseClient._make_api_call`, attributed to the Lambda function whose
  handler is running on the calling thread (or that submitted the work to a sender's thread
  pool), or to the state machine (moto's ASL interpreter: its Lambda `Invoke` for a Task state,
  its service integrations) when none is.
- DynamoDB units: item sizes before and after each request, read from moto's backend directly
  (not through the API, so not counted). DynamoDB requests are serialized while measured, so
  before and after belong to the request (local mode serializes them anyway).
- Lambda: `Functions.invoke`, through which local mode runs every handler (HTTP front, Task
  states, asynchronous invokes). The duration of an asynchronous invoke nested in a handler is
  not billed to the caller.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.cost_model import dynamodb_item_size, read_units, write_units
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.dynamodb.models import dynamodb_backends

from mxpush import delivery
from mxpush_local.aws import ACCOUNT, REGION, Functions
from mxpush_local.priority import requests_first

STATE_MACHINE = "(state machine)"
# The notify bodies carry this header so units can be told apart by what was notified.
KIND_HEADER = "x-bench-kind"
_CHARGED_FAILURES = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})


@dataclass
class _Frame:
    logical_id: str
    kind: str
    started: float
    cpu_started: float = 0.0
    excluded: float = 0.0
    cpu_excluded: float = 0.0


@dataclass
class Invocation:
    logical_id: str
    started_at: float  # time.time()
    seconds: float  # wall-clock duration (nested asynchronous invokes excluded)
    cpu_seconds: float  # CPU time of the handler's thread (moto's work included)


@dataclass
class Tally:
    # (source, service, operation) -> calls
    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # (source, notification kind or "") -> units
    write_units: Counter[tuple[str, str]] = field(default_factory=Counter)
    read_units: defaultdict[tuple[str, str], float] = field(
        default_factory=lambda: defaultdict(float)
    )
    invocations: list[Invocation] = field(default_factory=list)
    largest_item: int = 0
    # Query/Scan with a FilterExpression: items read but filtered out are not seen (lower bound).
    filtered_reads: int = 0


class Meter:
    def __init__(self, functions: Functions, table_name: str) -> None:
        self.functions = functions
        self.table_name = table_name
        self.tally = Tally()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._dynamodb_lock = threading.RLock()
        self._active = False
        self._saved_api_call: Any = None
        self._saved_invoke: Any = None
        self._saved_pool: Any = None

    # --- lifecycle -----------------------------------------------------------------------------

    def install(self) -> None:
        original_call = BaseClient._make_api_call  # type: ignore[attr-defined]
        # Every way local mode runs a handler (API routes, Step Functions tasks, asynchronous
        # invokes, schedules) ends in `Functions._run`, in the thread that runs it.
        original_run = self.functions._run
        meter = self

        def make_api_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
            return meter._api_call(client, operation, params, original_call)

        def run(logical_id: str, event: dict[str, Any], timeout: float) -> Any:
            return meter._invoke(logical_id, event, lambda i, e: original_run(i, e, timeout))

        self._saved_api_call = original_call
        self._saved_invoke = original_run
        BaseClient._make_api_call = make_api_call  # type: ignore[attr-defined]
        self.functions._run = run  # type: ignore[method-assign]
        # A sender pushes a slot's batches on a thread pool: its workers' calls are its own.
        self._saved_pool = vars(delivery)["ThreadPoolExecutor"]
        setattr(delivery, "ThreadPoolExecutor", self._attributed_pool())  # noqa: B010 - not exported

    def _attributed_pool(self) -> type[ThreadPoolExecutor]:
        meter = self

        class AttributedPool(ThreadPoolExecutor):
            def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                parent = meter._stack()[-1:]

                def attributed(*inner_args: Any, **inner_kwargs: Any) -> Any:
                    stack = meter._stack()
                    stack.extend(parent)
                    try:
                        return fn(*inner_args, **inner_kwargs)
                    finally:
                        del stack[len(stack) - len(parent) :]

                return super().submit(attributed, *args, **kwargs)

        return AttributedPool

    def uninstall(self) -> None:
        if self._saved_api_call is not None:
            BaseClient._make_api_call = self._saved_api_call  # type: ignore[attr-defined]
        if self._saved_invoke is not None:
            self.functions._run = self._saved_invoke  # type: ignore[method-assign]
        if self._saved_pool is not None:
            setattr(delivery, "ThreadPoolExecutor", self._saved_pool)  # noqa: B010 - not exported

    def start(self) -> Tally:
        """Count from now on, into a fresh tally."""
        with self._lock:
            self.tally = Tally()
            self._active = True
        return self.tally

    def stop(self) -> Tally:
        with self._lock:
            self._active = False
        return self.tally

    @contextmanager
    def measuring(self) -> Iterator[None]:
        """Calls made by this thread meanwhile are the bench's own (histories, polls)."""
        self._local.measuring = True
        try:
            yield
        finally:
            self._local.measuring = False

    # --- API calls -----------------------------------------------------------------------------

    def _stack(self) -> list[_Frame]:
        stack: list[_Frame] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _api_call(
        self, client: BaseClient, operation: str, params: dict[str, Any], original: Any
    ) -> Any:
        if not self._active or getattr(self._local, "measuring", False):
            return original(client, operation, params)
        service = client.meta.service_model.service_name
        stack = self._stack()
        source = stack[-1].logical_id if stack else STATE_MACHINE
        kind = stack[-1].kind if stack else ""
        with self._lock:
            self.tally.calls[(source, service, operation)] += 1
        if service == "dynamodb":
            return self._dynamodb(operation, params, (source, kind), original, client)
        if service == "lambda" and operation == "Invoke":
            self._local.invocation_type = params.get("InvocationType", "RequestResponse")
            try:
                return original(client, operation, params)
            finally:
                self._local.invocation_type = None
        return original(client, operation, params)

    # --- DynamoDB ------------------------------------------------------------------------------

    def _dynamodb(
        self,
        operation: str,
        params: dict[str, Any],
        key: tuple[str, str],
        original: Any,
        client: BaseClient,
    ) -> Any:
        writes = _write_targets(operation, params)
        # Sizes before and after must see no other write between them, hence the lock; a
        # background call takes its requests-first turn before it, not while holding it.
        with requests_first.turn_taken(), self._dynamodb_lock:
            before = [self._item_size(table, item_key) for table, item_key in writes]
            try:
                result = original(client, operation, params)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in _CHARGED_FAILURES:
                    self._charge_writes(operation, before, before, key)
                raise
            after = [self._item_size(table, item_key) for table, item_key in writes]
            self._charge_writes(operation, before, after, key)
            self._charge_reads(operation, params, result, key)
        return result

    def _charge_writes(
        self, operation: str, before: list[int], after: list[int], key: tuple[str, str]
    ) -> None:
        transactional = operation == "TransactWriteItems"
        units = sum(
            write_units(b, a, transactional=transactional)
            for b, a in zip(before, after, strict=True)
        )
        with self._lock:
            if units:
                self.tally.write_units[key] += units
            self.tally.largest_item = max([self.tally.largest_item, *before, *after])

    def _charge_reads(
        self, operation: str, params: dict[str, Any], result: Any, key: tuple[str, str]
    ) -> None:
        units = 0.0
        if operation == "GetItem":
            size = self._item_size(params["TableName"], params["Key"])
            units = read_units(size, consistent=bool(params.get("ConsistentRead")))
        elif operation == "BatchGetItem":
            for table, request in params.get("RequestItems", {}).items():
                consistent = bool(request.get("ConsistentRead"))
                for item_key in request.get("Keys", []):
                    size = self._item_size(table, item_key)
                    units += read_units(size, consistent=consistent)
        elif operation == "TransactGetItems":
            for entry in params.get("TransactItems", []):
                get = entry["Get"]
                size = self._item_size(get["TableName"], get["Key"])
                units += read_units(size, consistent=True, transactional=True)
        elif operation in ("Query", "Scan"):
            units = self._query_units(params, result)
        if units:
            with self._lock:
                self.tally.read_units[key] += units

    def _query_units(self, params: dict[str, Any], result: Any) -> float:
        """Query/Scan bill the summed size of the items read, rounded up once. On the table,
        whole items (a projection does not make a read cheaper); on an index, its entries."""
        if params.get("FilterExpression") or params.get("ScanFilter") or params.get("QueryFilter"):
            with self._lock:
                self.tally.filtered_reads += 1
        table = params["TableName"]
        items = result.get("Items", []) if isinstance(result, Mapping) else []
        if params.get("IndexName"):
            size = sum(dynamodb_item_size(item) for item in items)
        else:
            size = sum(self._item_size(table, _key_from_item(table, item)) for item in items)
        return read_units(size, consistent=bool(params.get("ConsistentRead")))

    def _item_size(self, table: str, item_key: Mapping[str, Any]) -> int:
        backend = dynamodb_backends[ACCOUNT][REGION]
        try:
            item = backend.get_item(table, dict(item_key))
        except Exception:  # noqa: BLE001 - a malformed request: AWS refuses it, nothing billed
            return 0
        size = 0 if item is None else dynamodb_item_size(item.to_json()["Attributes"])
        with self._lock:
            self.tally.largest_item = max(self.tally.largest_item, size)
        return size

    # --- Lambda --------------------------------------------------------------------------------

    def _invoke(self, logical_id: str, event: dict[str, Any], original: Callable[..., Any]) -> Any:
        if not self._active:
            return original(logical_id, event)
        stack = self._stack()
        asynchronous = bool(stack) and getattr(self._local, "invocation_type", None) == "Event"
        frame = _Frame(logical_id, _kind_of(event) or (stack[-1].kind if stack else ""), 0.0)
        started_at = time.time()
        frame.started, frame.cpu_started = time.perf_counter(), time.thread_time()
        stack.append(frame)
        try:
            return original(logical_id, event)
        finally:
            stack.pop()
            elapsed = time.perf_counter() - frame.started
            cpu = time.thread_time() - frame.cpu_started
            if asynchronous:
                stack[-1].excluded += elapsed  # the caller did not wait for it
                stack[-1].cpu_excluded += cpu
            invocation = Invocation(
                logical_id, started_at, elapsed - frame.excluded, cpu - frame.cpu_excluded
            )
            with self._lock:
                self.tally.invocations.append(invocation)


def _kind_of(event: Any) -> str:
    headers = event.get("headers") if isinstance(event, Mapping) else None
    if isinstance(headers, Mapping):
        return str(headers.get(KIND_HEADER, ""))
    return ""


def _write_targets(operation: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(table, key) of every item a write request touches; keys taken from whole items with the
    table's key schema."""
    targets: list[tuple[str, dict[str, Any]]] = []
    if operation in ("UpdateItem", "DeleteItem"):
        targets.append((params["TableName"], params["Key"]))
    elif operation == "PutItem":
        targets.append((params["TableName"], _key_from_item(params["TableName"], params["Item"])))
    elif operation == "TransactWriteItems":
        for entry in params.get("TransactItems", []):
            ((action, request),) = entry.items()
            table = request["TableName"]
            key = request["Item"] if action == "Put" else request["Key"]
            targets.append((table, _key_from_item(table, key)))
    elif operation == "BatchWriteItem":
        for table, requests in params.get("RequestItems", {}).items():
            for request in requests:
                if "PutRequest" in request:
                    targets.append((table, _key_from_item(table, request["PutRequest"]["Item"])))
                else:
                    targets.append((table, request["DeleteRequest"]["Key"]))
    return targets


def _key_from_item(table: str, item: Mapping[str, Any]) -> dict[str, Any]:
    schema = dynamodb_backends[ACCOUNT][REGION].get_table(table)
    names = [schema.hash_key_attr, schema.range_key_attr]
    return {name: item[name] for name in names if name and name in item}
