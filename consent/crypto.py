"""Keys derived from the engine's secret: per-subject evidence sealing (AES-GCM, keys wrapped
with a master key) and Ed25519 signing of ledger checkpoints. ``cryptography`` does the work."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _derive(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"offer-engine", info=purpose).derive(
        secret.encode()
    )


class EvidenceSealer:
    """Seals evidence (IP, user agent, ...) per subject; a shredded key leaves only ciphertext."""

    def __init__(self, secret: str) -> None:
        self._master = AESGCM(_derive(secret, b"subject-key-wrap"))

    def new_wrapped_key(self) -> str:
        key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._master.encrypt(nonce, key, b"subject-key")).decode()

    def unwrap(self, wrapped: str) -> AESGCM:
        """The subject's cipher, for readers that open many entries of one subject."""
        return self._unwrap(wrapped)

    def _unwrap(self, wrapped: str) -> AESGCM:
        raw = base64.b64decode(wrapped)
        return AESGCM(self._master.decrypt(raw[:12], raw[12:], b"subject-key"))

    def seal(self, wrapped_key: str, evidence: dict[str, Any]) -> str:
        nonce = os.urandom(12)
        plain = json.dumps(evidence, sort_keys=True).encode()
        return base64.b64encode(
            nonce + self._unwrap(wrapped_key).encrypt(nonce, plain, None)
        ).decode()

    def open(self, wrapped_key: str | None, sealed: str) -> dict[str, Any] | None:
        """The evidence, or None once the subject's key is shredded."""
        if wrapped_key is None:
            return None
        raw = base64.b64decode(sealed)
        opened: dict[str, Any] = json.loads(
            self._unwrap(wrapped_key).decrypt(raw[:12], raw[12:], None)
        )
        return opened


class CheckpointSigner:
    def __init__(self, secret: str) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(_derive(secret, b"ledger-checkpoint"))
        self.public_key = (
            self._key.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex()
        )

    def sign(self, message: bytes) -> str:
        return self._key.sign(message).hex()


def checkpoint_message(last_id: int, entry_hash: str, signed_at: str) -> bytes:
    return f"offer-engine consent ledger\n{last_id}\n{entry_hash}\n{signed_at}".encode()


def export_span_message(
    anchor_id: int, anchor_hash: str, last_id: int, last_hash: str, signed_at: str
) -> bytes:
    """What an export's trailer signs: the entry it starts after and the entry it ends at (a
    statement no checkpoint can stand in for, so entries cut from either end are seen)."""
    return (
        f"offer-engine consent ledger export\n{anchor_id}\n{anchor_hash}\n"
        f"{last_id}\n{last_hash}\n{signed_at}"
    ).encode()


def verify_signature(public_key_hex: str, message: bytes, signature_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(
            bytes.fromhex(signature_hex), message
        )
    except Exception:
        return False
    return True
