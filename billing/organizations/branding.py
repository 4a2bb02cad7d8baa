"""An organization's branding as stored and as the public sees it: the
settings' one stored shape, the picture's URL, the public branding read and
the picture itself (both public, without a token: API.md, Branding).

The public read finds an organization by its id or its `external_id`, in one
query either way, and an unknown id goes through the same steps as a known
one before it is a 404: the answer's cost says nothing about which ids exist.
"""

from __future__ import annotations

from typing import Any

from flask import url_for
from sqlalchemy import bindparam, or_, select

from billing.errors import not_found
from billing.models import Organization, OrganizationPicture
from billing.state import BillingState

PICTURE_ENDPOINT = "pictures.picture"


def stored_branding(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The branding as kept and shown: every key present (null where unset),
    or None when nothing at all is set (`{}` included)."""
    value = value or {}
    given = value.get("colors") or {}
    colors = {"primary": given.get("primary"), "page_background": given.get("page_background")}
    branding = {"display_name": value.get("display_name"), "login_hint": value.get("login_hint"), "colors": colors}
    if branding["display_name"] is None and branding["login_hint"] is None and not any(colors.values()):
        return None
    return branding


def picture_url(organization_id: str, url: str | None, digest: str | None) -> str | None:
    """The URL given, or ours for an upload (absolute, as a page on another
    origin needs it; it names the digest, so a new picture has a new URL)."""
    if url is not None or digest is None:
        return url
    return url_for(PICTURE_ENDPOINT, organizationId=organization_id, pictureId=digest, _external=True)


def picture_of(org: Organization) -> str | None:
    return picture_url(org.id, org.picture_url, org.picture_digest)


_PUBLIC = select(
    Organization.id, Organization.name, Organization.picture_url, Organization.picture_digest, Organization.branding
).where(or_(Organization.id == bindparam("key"), Organization.external_id == bindparam("key")))
# What an unknown id's answer is built from, so that it costs what a known one's does.
_NOBODY: tuple[Any, ...] = (
    "org_0000000000000000",
    "nobody",
    None,
    "0" * 64,
    {"display_name": "nobody", "login_hint": "nobody", "colors": {"primary": None, "page_background": None}},
)
_UNSET: dict[str, Any] = {
    "display_name": None,
    "login_hint": None,
    "colors": {"primary": None, "page_background": None},
}


def public_branding(state: BillingState, key: str) -> dict[str, Any]:
    """`{organization_id, display_name, picture, login_hint, colors}` of the
    organization whose id or external_id is `key`; nothing about billing.
    `display_name` falls back to the organization's name. 404 when none."""
    with state.db.read() as session:
        row = session.execute(_PUBLIC, {"key": key}).first()
    org_id, name, url, digest, branding = tuple(row) if row is not None else _NOBODY
    shown = branding or _UNSET
    answer = {
        "organization_id": org_id,
        "display_name": shown["display_name"] or name,
        "picture": picture_url(org_id, url, digest),
        "login_hint": shown["login_hint"],
        "colors": dict(shown["colors"]),
    }
    if row is None:
        raise not_found("organization")
    return answer


_PICTURE = select(OrganizationPicture.content_type, OrganizationPicture.data).where(
    OrganizationPicture.organization_id == bindparam("organization_id"),
    OrganizationPicture.digest == bindparam("digest"),
)


def stored_picture(state: BillingState, organization_id: str, digest: str) -> tuple[str, bytes]:
    """(content type, bytes) of the organization's picture if `digest` names
    its current one; 404 otherwise (a replaced picture's URL is gone)."""
    with state.db.read() as session:
        row = session.execute(_PICTURE, {"organization_id": organization_id, "digest": digest}).first()
    if row is None:
        raise not_found("picture")
    return str(row[0]), bytes(row[1])
