"""Typed calls of the engine's HTTP API: the SDK (a device session), and the manager and POS
calls that tools and tests need."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from client.models import (
    Campaign,
    Consent,
    Device,
    ImportReport,
    InboxCoupon,
    NearFences,
    Notice,
    Opened,
    Ping,
    PingResult,
    Preferences,
    Redemption,
    Store,
    StoreList,
    Token,
    Why,
)
from client.transport import Transport

MAX_BATCH = 1000


def _keyed(key: str | None, name: str) -> dict[str, str]:
    if not key:
        raise ValueError(f"this call needs the {name} API key (pass {name}_key to the client)")
    return {"X-API-Key": key}


class DeviceSession:
    """The calls of one registered device, authenticated by its device-bound token."""

    def __init__(
        self,
        transport: Transport,
        token: str,
        *,
        device_id: str = "",
        subject_id: str = "",
        token_expires_at: datetime | None = None,
    ) -> None:
        self._t = transport
        self.token = token
        self.device_id = device_id
        self.subject_id = subject_id
        self.token_expires_at = token_expires_at

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def rotate_token(self) -> Token:
        """Exchange the current token for the next one; the session uses the new one after."""
        response = self._t.call("POST", "/v1/sdk/devices/token", headers=self._auth)
        token = Token.model_validate(response.json())
        self.token, self.token_expires_at = token.token, token.token_expires_at
        return token

    def give_consent(
        self, purpose: str, notice_version: str, channel: str | None = None
    ) -> Consent:
        return self._consent(purpose, notice_version, channel, granted=True)

    def withdraw_consent(
        self, purpose: str, notice_version: str, channel: str | None = None
    ) -> Consent:
        return self._consent(purpose, notice_version, channel, granted=False)

    def _consent(
        self, purpose: str, notice_version: str, channel: str | None, *, granted: bool
    ) -> Consent:
        body = {
            "purpose": purpose,
            "channel": channel,
            "granted": granted,
            "notice_version": notice_version,
        }
        # Each call is a new ledger entry: never retried automatically.
        response = self._t.call("POST", "/v1/sdk/consents", headers=self._auth, json=body)
        return Consent.model_validate(response.json())

    def consents(self) -> list[Consent]:
        response = self._t.call("GET", "/v1/sdk/consents", headers=self._auth)
        return [Consent.model_validate(c) for c in response.json()]

    def send_pings(
        self, pings: Sequence[Ping], *, extra_headers: dict[str, str] | None = None
    ) -> PingResult:
        """One batch of 1 to 1,000 fixes. Retried when safe: every ping has an id, so the engine
        ignores a fix it has already stored."""
        if not 1 <= len(pings) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} pings, not {len(pings)}")
        body = {"pings": [p.model_dump(mode="json") for p in pings]}
        response = self._t.call(
            "POST",
            "/v1/sdk/pings",
            headers={**self._auth, **(extra_headers or {})},
            json=body,
            idempotent=True,
        )
        return PingResult.model_validate(response.json())

    def inbox(self) -> list[InboxCoupon]:
        response = self._t.call("GET", "/v1/sdk/offers", headers=self._auth)
        return [InboxCoupon.model_validate(c) for c in response.json()]

    def opened(self, coupon_id: str) -> Opened:
        response = self._t.call(
            "POST", f"/v1/sdk/offers/{coupon_id}/opened", headers=self._auth, idempotent=True
        )
        return Opened.model_validate(response.json())

    def why(self, coupon_id: str) -> Why:
        response = self._t.call("GET", f"/v1/sdk/offers/{coupon_id}/why", headers=self._auth)
        return Why.model_validate(response.json())

    def nearest_fences(
        self, lon: float, lat: float, *, platform: str | None = None, limit: int | None = None
    ) -> NearFences:
        params = {"lon": lon, "lat": lat, "platform": platform, "limit": limit}
        response = self._t.call("GET", "/v1/sdk/fences/nearest", headers=self._auth, params=params)
        return NearFences.model_validate(response.json())

    def my_data(self) -> dict[str, Any]:
        data: dict[str, Any] = self._t.call("GET", "/v1/sdk/me/data", headers=self._auth).json()
        return data

    def preferences(self) -> Preferences:
        response = self._t.call("GET", "/v1/sdk/preferences", headers=self._auth)
        return Preferences.model_validate(response.json())

    def set_preferences(self, preferences: Preferences) -> Preferences:
        body = preferences.model_dump(mode="json", exclude={"updated_at"})
        response = self._t.call("PUT", "/v1/sdk/preferences", headers=self._auth, json=body)
        return Preferences.model_validate(response.json())


class SdkApi:
    def __init__(self, transport: Transport, sdk_key: str | None) -> None:
        self._t = transport
        self._key = sdk_key

    def register_device(
        self,
        customer_ref: str,
        platform: str,
        *,
        email: str | None = None,
        push_token: str | None = None,
    ) -> DeviceSession:
        body = {
            "customer_ref": customer_ref,
            "platform": platform,
            "email": email,
            "push_token": push_token,
        }
        response = self._t.call(
            "POST", "/v1/sdk/devices", headers=_keyed(self._key, "sdk"), json=body
        )
        device = Device.model_validate(response.json())
        return DeviceSession(
            self._t,
            device.token,
            device_id=device.device_id,
            subject_id=device.subject_id,
            token_expires_at=device.token_expires_at,
        )

    def session(self, token: str, device_id: str = "") -> DeviceSession:
        """Resume a device with a token the app stored."""
        return DeviceSession(self._t, token, device_id=device_id)

    def notice(self, purpose: str, language: str | None = None) -> Notice:
        response = self._t.call("GET", f"/v1/sdk/notices/{purpose}", params={"language": language})
        return Notice.model_validate(response.json())


class ManagerApi:
    def __init__(self, transport: Transport, manager_key: str | None) -> None:
        self._t = transport
        self._key = manager_key

    @property
    def _auth(self) -> dict[str, str]:
        return _keyed(self._key, "manager")

    def create_store(
        self,
        name: str,
        *,
        lon: float | None = None,
        lat: float | None = None,
        radius_m: float | None = None,
        geometry: dict[str, Any] | None = None,
        timezone: str = "UTC",
        external_id: str | None = None,
        opening_hours: dict[str, list[list[str]]] | None = None,
    ) -> Store:
        fence: dict[str, Any] = (
            {"geometry": geometry}
            if geometry is not None
            else {"lon": lon, "lat": lat, "radius_m": radius_m}
        )
        body = {
            "name": name,
            "timezone": timezone,
            "external_id": external_id,
            "opening_hours": opening_hours,
            "fence": fence,
        }
        response = self._t.call("POST", "/v1/manager/stores", headers=self._auth, json=body)
        return Store.model_validate(response.json())

    def stores(self, *, limit: int = 50, offset: int = 0) -> StoreList:
        response = self._t.call(
            "GET",
            "/v1/manager/stores",
            headers=self._auth,
            params={"limit": limit, "offset": offset},
        )
        return StoreList.model_validate(response.json())

    def import_stores(self, path: Path | str, **options: Any) -> ImportReport:
        """Upload a stores file (GeoJSON, GeoPackage, zipped Shapefile, CSV); upsert by
        external id, so sending it again is harmless (and retried)."""
        path = Path(path)
        with path.open("rb") as handle:
            content = handle.read()
        response = self._t.call(
            "POST",
            "/v1/manager/stores/import",
            headers=self._auth,
            params=options,
            files={"file": (path.name, content)},
            idempotent=True,
        )
        return ImportReport.model_validate(response.json())

    def create_campaign(
        self,
        name: str,
        store_ids: Sequence[str],
        *,
        title: str,
        body: str,
        discount_text: str,
        valid_minutes: int,
        daily_cap_per_shopper: int = 1,
        **extra: Any,
    ) -> Campaign:
        payload = {
            "name": name,
            "store_ids": list(store_ids),
            "daily_cap_per_shopper": daily_cap_per_shopper,
            "offer": {
                "title": title,
                "body": body,
                "discount_text": discount_text,
                "valid_minutes": valid_minutes,
            },
            **extra,
        }
        response = self._t.call("POST", "/v1/manager/campaigns", headers=self._auth, json=payload)
        return Campaign.model_validate(response.json())

    def publish_notice(
        self, purpose: str, version: str, text: str, *, language: str = "en"
    ) -> Notice:
        body = {"purpose": purpose, "version": version, "language": language, "text": text}
        response = self._t.call("POST", "/v1/manager/notices", headers=self._auth, json=body)
        return Notice.model_validate(response.json())


class PosApi:
    def __init__(self, transport: Transport, pos_key: str | None) -> None:
        self._t = transport
        self._key = pos_key

    def redeem(self, code: str, store_id: str, *, idempotency_key: str | None = None) -> Redemption:
        """Redeem at the till. With an ``idempotency_key`` (keep it for the same attempt) the
        call is retried when safe; the engine answers a repeated key with the first answer."""
        response = self._t.call(
            "POST",
            "/v1/pos/redemptions",
            headers=_keyed(self._key, "pos"),
            json={"code": code, "store_id": store_id},
            idempotency_key=idempotency_key,
            idempotent=idempotency_key is not None,
        )
        return Redemption.model_validate(response.json())


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


__all__ = ["DeviceSession", "ManagerApi", "PosApi", "SdkApi"]
