"""The chain checker on its own: the fast canonical text is the ledger's canonical JSON for every
input, and each kind of damage to a chain is named at the right entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.chain import (
    FIELD_NAMES,
    ChainChecker,
    Checkpoint,
    Failed,
    canonical_text,
    canonical_values,
)
from consent.crypto import CheckpointSigner, checkpoint_message
from consent.domain import GENESIS_HASH, canonical, chain_hash
from consent.ledger import event_fields
from consent.models import ConsentEvent

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SIGNER = CheckpointSigner("unit-test-secret-unit-test-secret-0000")
values = st.one_of(
    st.text(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.none(),
    st.datetimes(timezones=st.just(UTC)),
)


def test_the_hashed_fields_are_the_ledgers() -> None:
    assert tuple(sorted(event_fields(ConsentEvent()).keys())) == FIELD_NAMES


@given(st.fixed_dictionaries({name: values for name in FIELD_NAMES}))
def test_fast_canonical_text_is_the_ledgers_canonical_json(fields: dict[str, Any]) -> None:
    assert canonical_text(fields) == canonical(fields).decode()
    assert canonical_values([fields[n] for n in FIELD_NAMES]) == canonical(fields).decode()


def test_unusual_values_fall_back_to_the_reference() -> None:
    fields: dict[str, Any] = dict.fromkeys(FIELD_NAMES, "x")
    fields["id"] = 1.5
    assert canonical_values(list(fields.values())) is None
    assert canonical_text(fields) == canonical(fields).decode()
    assert canonical_text({**fields, "extra": 1}) == canonical({**fields, "extra": 1}).decode()


def _chain(count: int) -> list[dict[str, Any]]:
    entries, prev = [], GENESIS_HASH
    for i in range(1, count + 1):
        at = (T0 + timedelta(minutes=i)).isoformat()
        fields = {
            "id": i,
            "subject_id": f"sub_{i % 3}",
            "purpose": "marketing_offers",
            "channel": "email",
            "state": "given" if i % 2 else "withdrawn",
            "notice_id": "ntc_1",
            "notice_version": "n-1",
            "method": "sdk",
            "evidence_sealed": f"sealed-{i}",
            "occurred_at": at,
            "valid_until": None,
            "recorded_at": at,
        }
        entry_hash = chain_hash(prev, fields)
        entries.append({"fields": fields, "prev": prev, "hash": entry_hash})
        prev = entry_hash
    return entries


def _feed(entries: list[dict[str, Any]], **checker: Any) -> tuple[str, int | None] | None:
    chain = ChainChecker(**checker)
    try:
        for entry in entries:
            fields = entry["fields"]
            chain.entry(fields["id"], fields, entry["prev"], entry["hash"])
    except Failed as exc:
        return exc.problem.kind, exc.problem.entry_id
    return None


def test_an_intact_chain_passes_and_each_damage_is_named() -> None:
    entries = _chain(10)
    assert _feed(entries) is None
    edited = [dict(e) for e in entries]
    edited[3] = {**edited[3], "fields": {**edited[3]["fields"], "state": "given"}}
    assert _feed(edited) == ("edited", 4)
    assert _feed(entries[:5] + entries[6:]) == ("deleted", 6)
    assert _feed(entries[1:]) == ("deleted", 1)
    swapped = [dict(e) for e in entries]
    swapped[2] = {**entries[7], "fields": {**entries[7]["fields"], "id": 3}}
    swapped[7] = {**entries[2], "fields": {**entries[2]["fields"], "id": 8}}
    assert _feed(swapped) == ("reordered", 3)
    assert _feed([*entries[:4], entries[5], entries[4], *entries[6:]]) == ("deleted", 5)
    assert _feed([*entries[:4], entries[3], *entries[4:]]) == ("inserted", 4)
    assert _feed(entries, head_id=8) == ("inserted", 9)
    unchained = [dict(e) for e in entries]
    unchained[0] = {**unchained[0], "hash": ""}
    assert _feed(unchained) == ("unchained", 1)


def _signed(last_id: int, entry_hash: str, signer: CheckpointSigner = SIGNER) -> Checkpoint:
    at = T0.isoformat()
    signature = signer.sign(checkpoint_message(last_id, entry_hash, at))
    return Checkpoint(last_id, entry_hash, at, signer.public_key, signature)


def test_checkpoints_must_be_signed_by_the_key_and_match_the_chain() -> None:
    entries = _chain(3)
    chain = ChainChecker(trusted_key=SIGNER.public_key)
    for entry in entries:
        chain.entry(entry["fields"]["id"], entry["fields"], entry["prev"], entry["hash"])
    chain.checkpoint(_signed(3, entries[2]["hash"]))
    assert chain.checkpoints == 1
    cases = [
        (_signed(3, entries[1]["hash"]), "edited"),  # signed, but not this chain's hash
        (
            Checkpoint(3, entries[2]["hash"], T0.isoformat(), SIGNER.public_key, "00" * 64),
            "bad_checkpoint",
        ),
        (
            _signed(3, entries[2]["hash"], CheckpointSigner("another-secret-another-secret-00")),
            "bad_checkpoint",
        ),
        (_signed(5, entries[2]["hash"]), "deleted"),  # signs an entry that is not there
    ]
    for checkpoint, kind in cases:
        with pytest.raises(Failed) as caught:
            chain.checkpoint(checkpoint)
        assert caught.value.problem.kind == kind, caught.value.problem.message
