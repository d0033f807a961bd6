"""Every sample in events/ through the real Lambda runtime interface (the emulator and
awslambdaric, as `sam local invoke` runs them in its container), against moto in server mode.

The sender samples name a registration and a batch: the test makes both through the functions
themselves (a registration event, then a notify event), puts their keys into the sample, and
checks that the batch is delivered to a fake backend - not skipped as "registration deleted".
Run by `make rie` (it needs .venv-sam's emulator), not by `make test`."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import boto3
import pytest
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends

from mxpush.vapid import generate_private_key, load_vapid_key
from tests.fakes.acrobits import FakeAcrobitsPnm
from tests.fakes.bark import Device, FakeBark
from tests.fakes.gotify import FakeGotify
from tests.fakes.ntfy import FakeNtfy
from tests.fakes.unifiedpush import FakeDistributor
from tests.fakes.webhook import FakeWebhook
from tests.fakes.webpush import FakePushService
from tests.rie.harness import (
    ACCOUNT,
    REGION,
    ROOT,
    TABLE_NAME,
    Rie,
    Stack,
    free_port,
    rie_binary,
)

EVENTS = ROOT / "events"
ADMIN_TOKEN = "rie-admin-token-0123456789"
VAPID_SUBJECT = "mailto:ops@example.org"
EMAIL_FROM = "push@mx.example.org"
PLACEHOLDER_PUSHKEY = "mxp_REPLACE_WITH_A_REGISTERED_PUSHKEY"
# What `sam local invoke --parameter-overrides` would say: fakes live on 127.0.0.1, Web Push
# needs a contact, email a sender address (verified in moto's SES).
OVERRIDES = {
    "AllowPrivateTargets": "true",
    "VapidSubject": VAPID_SUBJECT,
    "EmailFromAddress": EMAIL_FROM,
}

pytestmark = pytest.mark.skipif(rie_binary() is None, reason="needs .venv-sam (make validate)")


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@dataclass
class World:
    stack: Stack
    aws_env: dict[str, str]
    vapid_public_key: str
    logs: Path
    running: dict[str, Rie]

    def invoke(self, function: str, event: Any) -> Any:
        """One emulator per function, kept warm across invokes as Lambda keeps a container."""
        if function not in self.running:
            spec = self.stack.functions()[function]
            self.running[function] = Rie(spec, self.aws_env, self.logs / f"{function}.log")
        return self.running[function].invoke(event)

    @property
    def endpoint(self) -> str:
        return self.aws_env["AWS_ENDPOINT_URL"]

    def table(self) -> Any:
        return moto_session().resource("dynamodb", endpoint_url=self.endpoint).Table(TABLE_NAME)


def moto_session() -> boto3.Session:
    return boto3.Session(
        region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def create_resources(stack: Stack, endpoint: str, vapid_private_key: str) -> None:
    """What the stack would hold before the first invoke: the table, both state machines (moto
    records their executions; it runs no ASL here), the SSM SecureStrings."""
    table = stack.resources["Table"]["Properties"]
    session = moto_session()
    session.client("dynamodb", endpoint_url=endpoint).create_table(
        TableName=TABLE_NAME,
        BillingMode=table["BillingMode"],
        AttributeDefinitions=table["AttributeDefinitions"],
        KeySchema=table["KeySchema"],
        GlobalSecondaryIndexes=table["GlobalSecondaryIndexes"],
    )
    sfn = session.client("stepfunctions", endpoint_url=endpoint)
    for logical_id in ("SlotStateMachine", "RetryStateMachine"):
        definition = (ROOT / stack.resources[logical_id]["Properties"]["DefinitionUri"]).read_text()
        sfn.create_state_machine(
            name=stack.machine_name(logical_id),
            definition=definition,
            roleArn="arn:aws:iam::123456789012:role/mxpush-rie",
            type="STANDARD",
        )
    ssm = session.client("ssm", endpoint_url=endpoint)
    for parameter, value in (
        ("AdminTokenParameterName", ADMIN_TOKEN),
        ("VapidPrivateKeyParameterName", vapid_private_key),
        ("UnsubscribeSecretParameterName", "rie-unsubscribe-key-0123456789abcdef"),
    ):
        ssm.put_parameter(Name=stack.parameters[parameter], Value=value, Type="SecureString")
    session.client("sesv2", endpoint_url=endpoint).create_email_identity(
        EmailIdentity=EMAIL_FROM.split("@")[1]
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server's access log
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    aws_env = {
        # botocore sends every client there (also pynamodb's and powertools').
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    stack = Stack(OVERRIDES)
    vapid_private_key = generate_private_key()
    built = World(
        stack=stack,
        aws_env=aws_env,
        vapid_public_key=load_vapid_key(vapid_private_key, VAPID_SUBJECT).public_key,
        logs=tmp_path_factory.mktemp("rie-logs"),
        running={},
    )
    create_resources(stack, built.endpoint, vapid_private_key)
    yield built
    for rie in built.running.values():
        rie.stop()
    server.stop()


def with_token(event: dict[str, Any]) -> dict[str, Any]:
    event["headers"]["authorization"] = f"Bearer {ADMIN_TOKEN}"
    return event


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("notify-message.json", 200),
        ("notify-badge-only.json", 200),
        ("notify-call.json", 200),
        ("notify-discovery.json", 200),
        ("notify-bad-json.json", 400),
    ],
)
def test_notify_events(world: World, name: str, status: int) -> None:
    answer = world.invoke("NotifyFunction", load(name))

    assert answer["statusCode"] == status, answer
    body = json.loads(answer["body"])
    if name == "notify-bad-json.json":
        assert body["errcode"] == "M_NOT_JSON"
    elif name != "notify-discovery.json":
        assert body == {"rejected": [PLACEHOLDER_PUSHKEY]}


def register(world: World, backend: str, target: dict[str, Any]) -> str:
    """The registration sample, with another backend and target in its body."""
    event = with_token(load("registration-create.json"))
    body = json.loads(event["body"])
    body.update(backend=backend, target=target)
    event["body"] = json.dumps(body)
    answer = world.invoke("RegistrationFunction", event)
    assert answer["statusCode"] == 201, answer["body"]
    return str(json.loads(answer["body"])["pushkey"])


def test_registration_events(world: World) -> None:
    gotify = FakeGotify().start()
    try:
        pushkey = register(world, "gotify", {"url": gotify.base_url, "token": "AppToken.Valid1"})
    finally:
        gotify.stop()
    listing = world.invoke("RegistrationFunction", with_token(load("registration-list.json")))
    assert listing["statusCode"] == 200, listing
    assert pushkey in listing["body"]
    refused = world.invoke("RegistrationFunction", load("registration-list.json"))
    assert refused["statusCode"] == 401


def test_push_token_report_event(world: World) -> None:
    answer = world.invoke("RegistrationFunction", with_token(load("push-token-report.json")))

    assert answer["statusCode"] == 200, answer["body"]
    assert json.loads(answer["body"])["pusher"]["data"]["format"] == "event_id_only"


def test_deliver_slot_event(world: World) -> None:
    answer = world.invoke("DeliverSlotFunction", load("deliver-slot.json"))

    assert answer == {"slot": 1764600000, "batches": 0}


def test_sweep_event(world: World) -> None:
    answer = world.invoke("SweepFunction", load("sweep.json"))

    assert set(answer) == {"redriven_slots", "checked_slots", "redriven_batches"}, answer


def test_record_outcome_event(world: World) -> None:
    answer = world.invoke("RecordOutcomeFunction", load("record-outcome.json"))

    assert answer == {"outcome": "failed", "logged": 0}


class Fake(Protocol):
    def wait_for(self, count: int, timeout: float = 10.0) -> Any: ...

    def stop(self) -> None: ...


# backend -> (a started fake, the target registered for it)
Backend = Callable[[World], tuple[Fake, dict[str, Any]]]


def gotify(world: World) -> tuple[Fake, dict[str, Any]]:
    server = FakeGotify().start()
    return server, {"url": server.base_url, "token": "AppToken.Valid1"}


def ntfy(world: World) -> tuple[Fake, dict[str, Any]]:
    token = "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2"
    server = FakeNtfy(tokens={token: "bob"}, grants={"bob": {"bob_phone"}}).start()
    return server, {"url": server.topic_url("bob_phone"), "token": token}


def bark(world: World) -> tuple[Fake, dict[str, Any]]:
    server = FakeBark(devices={"F5u42Bd3HyW8KxkUqo2gRA": Device()}).start()
    return server, {"url": server.base_url, "device_key": "F5u42Bd3HyW8KxkUqo2gRA"}


def webhook(world: World) -> tuple[Fake, dict[str, Any]]:
    server = FakeWebhook().start()
    return server, {"url": server.hook_url}


def acrobits(world: World) -> tuple[Fake, dict[str, Any]]:
    token = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J="
    server = FakeAcrobitsPnm({token: "com.cloudsoftphone.app"}).start()
    target = {"device_token": token, "app_id": "com.cloudsoftphone.app", "url": server.send_url}
    return server, target


def webpush(world: World) -> tuple[Fake, dict[str, Any]]:
    server = FakePushService().start()
    return server, server.subscribe(world.vapid_public_key).subscription()


def unifiedpush(world: World) -> tuple[Fake, dict[str, Any]]:
    server = FakeDistributor().start()
    return server, {"endpoint": server.new_endpoint()}


class SesOutbox:
    """moto's SES, whose server runs in this process: the mails the email sender sent."""

    def __init__(self, recipient: str) -> None:
        self.recipient = recipient

    def wait_for(self, count: int, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            sent = [
                m
                for m in ses_backends[ACCOUNT][REGION].sent_messages
                if self.recipient in getattr(m, "destinations", ())
            ]
            if len(sent) >= count:
                return sent
            assert time.monotonic() < deadline, f"{len(sent)} mails to {self.recipient}"
            time.sleep(0.05)

    def stop(self) -> None:
        return


def email(world: World) -> tuple[Fake, dict[str, Any]]:
    return SesOutbox("bob.rie@example.org"), {"to": "bob.rie@example.org"}


BACKENDS: dict[str, Backend] = {
    "gotify": gotify,
    "ntfy": ntfy,
    "bark": bark,
    "webhook": webhook,
    "acrobits": acrobits,
    "webpush": webpush,
    "unifiedpush": unifiedpush,
    "email": email,
}


def test_every_sender_sample_is_covered() -> None:
    samples = {path.name.removesuffix("-sender.json") for path in EVENTS.glob("*-sender.json")}
    assert samples == set(BACKENDS)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_sender_sample_delivers_the_batch_it_names(world: World, backend: str) -> None:
    server, target = BACKENDS[backend](world)
    try:
        pushkey = register(world, backend, target)
        notify = load("notify-message.json")
        notify["body"] = notify["body"].replace(PLACEHOLDER_PUSHKEY, pushkey)
        answer = world.invoke("NotifyFunction", notify)
        assert json.loads(answer["body"]) == {"rejected": []}, answer
        # The sample's placeholders: the registration's key and the batch the notify stored.
        registration = hashlib.sha256(pushkey.encode()).hexdigest()
        items = world.table().query(
            KeyConditionExpression="rid = :rid AND begins_with(sk, :b)",
            ExpressionAttributeValues={":rid": registration, ":b": "b#"},
        )["Items"]
        [batch] = [item["sk"] for item in items]
        event = load(f"{backend}-sender.json")
        event["batches"] = [{"registration": registration, "batch": batch}]

        result = world.invoke(f"{sender_function(backend)}", event)

        assert result == {"delivered": 1}, result
        server.wait_for(1)
    finally:
        server.stop()


def sender_function(backend: str) -> str:
    """`webpush` -> `WebPushSenderFunction`, as the template names them."""
    names = {"webpush": "WebPush", "unifiedpush": "UnifiedPush"}
    return f"{names.get(backend, backend.capitalize())}SenderFunction"
