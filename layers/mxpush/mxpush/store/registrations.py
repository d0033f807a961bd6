"""Registrations and their claims (the registration API and push_token_report)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.expressions.update import Action
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from mxpush.errors import StoreUnavailable
from mxpush.model import Registration, Status
from mxpush.store.base import StoreBase, registration_from_item
from mxpush.store.models import (
    BATCH_PREFIX,
    CLAIM_SK,
    REGISTRATION_SK,
    ClaimItem,
    RegistrationItem,
    claim_id,
)
from mxpush.store.raw import ConditionFailed, deserialize_item, error_code


@dataclass(frozen=True)
class Removed:
    registration: Registration


class ClaimTaken(Exception):
    """Another registration of the same owner and backend holds this claim."""


class Registrations(StoreBase):
    def create_registration(self, registration: Registration) -> None:
        item = RegistrationItem(
            rid=registration.rid,
            sk=REGISTRATION_SK,
            pushkey=registration.pushkey,
            owner=registration.owner,
            backend=registration.backend,
            target=dict(registration.target),
            app_id=registration.app_id,
            created_at=registration.created_at,
            delay_seconds=registration.delay_seconds,
            options=registration.options.to_item(),
            homeserver=registration.homeserver,
            pusher=dict(registration.pusher) if registration.pusher else None,
            pusher_registered=registration.pusher_registered,
            status=registration.status.value,
            claim=registration.claim,
        )
        if registration.multi_channel:
            item.more_channels = [c.to_item() for c in registration.more_channels]
            item.mode = registration.mode.value
            # Present (empty) so that a channel's rejection is one nested SET.
            item.chrej = {}
        if registration.give_up_after_seconds is not None:
            item.give_up_after_seconds = registration.give_up_after_seconds
        if registration.claim is None:
            try:
                item.save(condition=RegistrationItem.rid.does_not_exist())
            except PynamoDBException as exc:
                raise StoreUnavailable(
                    f"could not store the registration ({error_code(exc)})"
                ) from None
            return
        claim = ClaimItem(
            rid=claim_id(registration.backend, registration.owner, registration.claim),
            sk=CLAIM_SK,
            registration=registration.rid,
        )
        try:
            connection = RegistrationItem._get_connection().connection
            with TransactWrite(connection=connection) as transaction:
                transaction.save(item, condition=RegistrationItem.rid.does_not_exist())
                transaction.save(claim, condition=ClaimItem.rid.does_not_exist())
        except TransactWriteError as exc:
            reasons = exc.cancellation_reasons
            claim_reason = reasons[1] if len(reasons) == 2 else None
            if claim_reason is not None and claim_reason.code == "ConditionalCheckFailed":
                raise ClaimTaken(registration.claim) from None
            raise StoreUnavailable(
                f"could not store the registration ({error_code(exc)})"
            ) from None
        except PynamoDBException as exc:
            raise StoreUnavailable(
                f"could not store the registration ({error_code(exc)})"
            ) from None

    def find_claimed(self, backend: str, owner: str, claim: str) -> str | None:
        """The rid of `owner`'s `backend` registration holding `claim`, if any (one GetItem).

        The registration may be gone if its deletion was interrupted: `update_target` then
        returns None, and `release_claim` frees the claim.
        """
        try:
            item = ClaimItem.get(claim_id(backend, owner, claim), CLAIM_SK, consistent_read=True)
        except ClaimItem.DoesNotExist:
            return None
        except PynamoDBException as exc:
            raise StoreUnavailable(f"DynamoDB GetItem failed ({error_code(exc)})") from None
        return item.registration

    def release_claim(self, backend: str, owner: str, claim: str, rid: str) -> None:
        """Free a claim if registration `rid` still holds it."""
        self._drop_claim(claim_id(backend, owner, claim), rid)

    def update_target(
        self,
        rid: str,
        *,
        claim: str,
        set_fields: Mapping[str, Any],
        remove_fields: Iterable[str] = (),
        pusher_registered: bool | None = None,
    ) -> Registration | None:
        """Replace some target fields of the registration holding `claim` and make it active
        again (new tokens: an old rejection no longer applies, on any channel). One UpdateItem.

        Returns the updated registration, or None if it no longer holds the claim (deleted).
        """
        R = RegistrationItem  # noqa: N806 - short alias for expression building
        actions: list[Action] = [R.target[k].set(v) for k, v in set_fields.items()]
        actions += [R.target[k].remove() for k in remove_fields if k not in set_fields]
        actions += [
            R.status.set(Status.ACTIVE.value),
            R.status_reason.remove(),
            R.status_at.remove(),
            # Channels rejected before: tried again (a channel still refused is rejected again
            # at its next push).
            R.chrej.remove(),
        ]
        if pusher_registered is not None:
            actions.append(R.pusher_registered.set(pusher_registered))
        # pynamodb builds the expression; the request goes out raw, so that one UpdateItem
        # both checks the claim and returns the updated item.
        kwargs = RegistrationItem._get_connection().get_operation_kwargs(
            rid,
            range_key=REGISTRATION_SK,
            key="Key",
            actions=actions,
            condition=R.claim == claim,
            return_values="ALL_NEW",
        )
        kwargs.pop("TableName", None)
        try:
            response = self._call("UpdateItem", **kwargs)
        except ConditionFailed:
            return None
        return registration_from_item(deserialize_item(response.get("Attributes")))

    def set_pusher_registered(self, rid: str, registered: bool) -> None:
        try:
            self._call(
                "UpdateItem",
                Key={"rid": {"S": rid}, "sk": {"S": REGISTRATION_SK}},
                UpdateExpression="SET pusher_registered = :r",
                ConditionExpression="attribute_exists(rid)",
                ExpressionAttributeValues={":r": {"BOOL": registered}},
            )
        except ConditionFailed:
            return

    def get_registration(self, rid: str) -> Registration | None:
        return self._get_registration(rid)

    def list_registrations(self, owner: str | None) -> list[Registration]:
        """The registrations of `owner`, or all of them (`None`, operator only), oldest first."""
        try:
            if owner is None:
                items: Iterable[RegistrationItem] = RegistrationItem.scan(
                    RegistrationItem.sk == REGISTRATION_SK
                )
            else:
                keys = [(k.rid, REGISTRATION_SK) for k in RegistrationItem.owner_index.query(owner)]
                items = RegistrationItem.batch_get(keys)
            found = [registration_from_item(_plain_item(i)) for i in items]
        except PynamoDBException as exc:
            raise StoreUnavailable(f"could not list registrations ({error_code(exc)})") from None
        return sorted(found, key=lambda r: r.created_at)

    def delete_registration(self, rid: str) -> Removed | None:
        """Delete the registration and its batches (pending ones are then skipped by their
        senders, which find them gone) and its claim."""
        registration = self._get_registration(rid)
        if registration is None:
            return None
        try:
            RegistrationItem(rid=rid, sk=REGISTRATION_SK).delete()
            keys = [(rid, sk) for sk in self._batch_keys(rid)]
            for start in range(0, len(keys), 25):
                self._delete_many(keys[start : start + 25])
        except PynamoDBException as exc:
            raise StoreUnavailable(
                f"could not delete the registration ({error_code(exc)})"
            ) from None
        if registration.claim:
            self._drop_claim(
                claim_id(registration.backend, registration.owner, registration.claim), rid
            )
        return Removed(registration)

    # --- internals ---------------------------------------------------------------------------

    def _batch_keys(self, rid: str) -> list[str]:
        keys: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "KeyConditionExpression": "rid = :rid AND begins_with(sk, :b)",
                "ExpressionAttributeValues": {":rid": {"S": rid}, ":b": {"S": BATCH_PREFIX}},
                "ProjectionExpression": "sk",
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            response = self._call("Query", **kwargs)
            keys += [item["sk"]["S"] for item in response.get("Items", [])]
            start = response.get("LastEvaluatedKey")
            if not start:
                return keys

    def _delete_many(self, keys: list[tuple[str, str]]) -> None:
        request = {
            self.table_name: [
                {"DeleteRequest": {"Key": {"rid": {"S": rid}, "sk": {"S": sk}}}} for rid, sk in keys
            ]
        }
        for _ in range(5):
            response = self._call_batch("BatchWriteItem", RequestItems=request)
            request = response.get("UnprocessedItems") or {}
            if not request:
                return

    def _drop_claim(self, key: str, rid: str) -> None:
        """Delete a claim item if it still names `rid` (another may have taken it since)."""
        try:
            ClaimItem(rid=key, sk=CLAIM_SK, registration=rid).delete(
                condition=ClaimItem.registration == rid
            )
        except PynamoDBException as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return
            raise StoreUnavailable(f"could not delete a claim ({error_code(exc)})") from None


def _plain_item(item: Model) -> dict[str, Any]:
    data: dict[str, Any] = item.attribute_values
    plain: dict[str, Any] = {}
    for name, value in data.items():
        plain[name] = value.as_dict() if hasattr(value, "as_dict") else value
    return plain
