"""Offer title and body templates with personalisation fields.

A template is ``str.format`` syntax over a fixed whitelist of plain field names: no attribute
access, no indexing, no format specs, nothing evaluated. Templates are checked when a manager
saves them, and rendered from a dictionary of strings when a coupon is issued or delivered.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime

from core.errors import InvalidInput

FIELDS: dict[str, str] = {
    "store": "the store's name",
    "discount": "the offer's discount text",
    "minutes": "how many minutes the coupon is valid",
    "expires_at": "the expiry time, HH:MM UTC",
    "campaign": "the campaign's name",
}


class InvalidTemplate(InvalidInput):
    code = "invalid_template"


def check_template(template: str, what: str = "template") -> None:
    """Raise ``InvalidTemplate`` with a clear message for anything but whitelisted ``{field}``s."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidTemplate(f"{what}: {exc}; write a literal brace as '{{{{' or '}}}}'") from exc
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in FIELDS:
            allowed = ", ".join("{" + f + "}" for f in FIELDS)
            raise InvalidTemplate(f"{what}: unknown field {{{field}}}; the fields are {allowed}")
        if spec or conversion:
            raise InvalidTemplate(f"{what}: field {{{field}}} takes no format or conversion")


@dataclass(frozen=True, slots=True)
class TemplateContext:
    store: str
    discount: str
    minutes: int
    expires_at: datetime
    campaign: str

    def values(self) -> dict[str, str]:
        return {
            "store": self.store,
            "discount": self.discount,
            "minutes": str(self.minutes),
            "expires_at": self.expires_at.strftime("%H:%M UTC"),
            "campaign": self.campaign,
        }


def render(template: str, context: TemplateContext) -> str:
    """The template with its fields filled; a stored template that no longer checks out (it was
    saved before a field was removed) is shown as written rather than failing a delivery."""
    try:
        check_template(template)
    except InvalidTemplate:
        return template
    return template.format_map(context.values())
