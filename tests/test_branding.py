"""Organization branding (API.md, Branding): `picture` and `branding` on create,
PATCH and every Organization; uploads decoded, checked and served by the
service; URLs kept as given and never fetched; the public branding read,
rate-limited, whose 404 costs what a known id costs."""

from __future__ import annotations

import base64
import dataclasses
import io
import socket
import struct
import zlib
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import event, func, select

from app import create_app
from billing.models import OrganizationPicture
from billing.organizations import branding, pictures
from billing.rate_limit import RateLimiter, client_key
from tests.helpers import assert_error

# Wikipedia's 5x5 red dot: the image whose first bytes the published example shows.
RED_DOT = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAUAAAAFCAYAAACNbyblAAAAHElEQVQI12P4"
    "//8/w38GIAXDIBKE0DHxgljNBAAO9TXL0Y4OHwAAAABJRU5ErkJggg=="
)
# The published example body of POST /workspaces/{workspaceId}/organizations, as printed.
PUBLISHED_EXAMPLE: dict[str, Any] = {
    "name": "Marketing Team",
    "billing_account_id": "cus_a1b2c3d4e5f6g7h8",
    "limits": {"locations": 5, "users": 20},
    "picture": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAUA...",
    "branding": {"display_name": "ACME Inc.", "login_hint": "acme-inc", "colors": {"primary": "#007bff"}},
}
PUBLIC_KEYS = {"organization_id", "display_name", "picture", "login_hint", "colors"}


@pytest.fixture(autouse=True)
def fresh_budget(state: Any) -> None:
    state.public_limiter.reset()


@pytest.fixture
def alice(as_user: Any) -> Any:
    return as_user("alice")


def orgs(ws: str) -> str:
    return f"/workspaces/{ws}/organizations"


def image_bytes(fmt: str, size: tuple[int, int] = (8, 6), mode: str = "RGB", **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red" if mode in ("RGB", "RGBA") else 1).save(out, format=fmt, **save)
    return out.getvalue()


def data_uri(media_type: str, raw: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(raw).decode()}"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height (and holds a scrap of pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def gif_frames(count: int, size: tuple[int, int] = (2, 2)) -> bytes:
    frames = [Image.new("L", size, (i * 7) % 256) for i in range(count)]  # each unlike the last (Pillow merges)
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return out.getvalue()


def picture_rows(state: Any) -> int:
    with state.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(OrganizationPicture)) or 0)


def served(client: Any, url: str) -> Any:
    """GET a `picture` URL (absolute, on the app's own origin) without a token."""
    assert url.startswith("http://localhost/organizations/"), url
    return client.get(url.removeprefix("http://localhost"))


@pytest.fixture
def pooled(alice: Any) -> dict[str, Any]:
    ws = alice.workspace("pooled")
    root = alice.post(orgs(ws), {"name": "Root"}).json
    return {"ws": ws, "root": root, "path": f"{orgs(ws)}/{root['id']}"}


# -- the published example and the shapes -----------------------------------------------


def test_the_published_example_body_is_accepted(alice: Any, client: Any) -> None:
    """The published body, with its elided picture completed (the image its first
    bytes begin, Wikipedia's red dot): 201, the branding as sent, the picture ours."""
    ws = alice.workspace("single")
    account = alice.account(ws)["id"]
    body = {**PUBLISHED_EXAMPLE, "billing_account_id": account, "picture": RED_DOT}
    response = alice.post(orgs(ws), body)
    assert response.status_code == 201, response.json
    org = response.json
    assert list(org) == [
        "id",
        "workspace_id",
        "name",
        "external_id",
        "parent_org_id",
        "path",
        "depth",
        "billing_account_id",
        "picture",
        "limits",
        "usage",
        "branding",
        "created_at",
        "updated_at",
    ]
    assert org["branding"] == {
        "display_name": "ACME Inc.",
        "login_hint": "acme-inc",
        "colors": {"primary": "#007bff", "page_background": None},
    }
    assert org["limits"] == {"locations": 5, "users": 20, "sso": None}
    image = served(client, org["picture"])
    assert image.status_code == 200 and image.mimetype == "image/png"
    assert Image.open(io.BytesIO(image.data)).size == (5, 5)
    assert alice.get(f"{orgs(ws)}/{org['id']}").json == org
    assert alice.get(orgs(ws)).json["data"] == [org]


def test_the_published_examples_elided_picture_is_refused_and_creates_nothing(alice: Any, state: Any) -> None:
    """As printed, the example's picture ends in "...": cut short, it is no image (422)."""
    ws = alice.workspace("single")
    body = {**PUBLISHED_EXAMPLE, "billing_account_id": alice.account(ws)["id"]}
    error = assert_error(alice.post(orgs(ws), body), 422, "validation_failed")
    assert "picture" in error["errors"]
    assert alice.get(orgs(ws)).json["data"] == [] and picture_rows(state) == 0


def test_branding_is_replaced_by_patch_and_null_removes_it(alice: Any, pooled: dict[str, Any]) -> None:
    path = pooled["path"]
    assert pooled["root"]["branding"] is None and pooled["root"]["picture"] is None
    full = {
        "display_name": "ACME",
        "login_hint": "acme",
        "colors": {"primary": "#FF5733", "page_background": "#ffffff"},
    }
    assert alice.patch(path, {"branding": full}).json["branding"] == full
    # A PATCH's branding replaces the whole object: what it leaves out is unset.
    assert alice.patch(path, {"branding": {"colors": {"primary": "#000000"}}}).json["branding"] == {
        "display_name": None,
        "login_hint": None,
        "colors": {"primary": "#000000", "page_background": None},
    }
    assert alice.patch(path, {"name": "Renamed"}).json["branding"]["colors"]["primary"] == "#000000"
    assert alice.patch(path, {"branding": None}).json["branding"] is None
    alice.patch(path, {"branding": full})
    assert alice.patch(path, {"branding": {}}).json["branding"] is None  # nothing set is none
    assert alice.get(path).json["branding"] is None


@pytest.mark.parametrize(
    "branding",
    [
        {"colors": {"primary": "#fff"}},
        {"colors": {"primary": "red"}},
        {"colors": {"page_background": "#GGGGGG"}},
        {"colors": {"primary": "#0000000"}},
        {"display_name": "  "},
        {"display_name": "x" * 256},
        {"login_hint": "a" * 256},
        {"logo_url": "https://example.com/a.png"},
        {"colors": {"secondary": "#000000"}},
        {"display_name": 5},
        "ACME",
    ],
)
def test_bad_branding_is_422_and_changes_nothing(alice: Any, pooled: dict[str, Any], branding: Any) -> None:
    error = assert_error(alice.patch(pooled["path"], {"branding": branding}), 422, "validation_failed")
    assert "branding" in str(error["errors"])
    assert alice.get(pooled["path"]).json == pooled["root"]
    assert_error(alice.post(orgs(pooled["ws"]), {"name": "New", "branding": branding}), 422, "validation_failed")
    assert len(alice.get(orgs(pooled["ws"])).json["data"]) == 1


def test_children_take_a_picture_and_branding_too(alice: Any, pooled: dict[str, Any], client: Any) -> None:
    child = alice.post(
        f"{pooled['path']}/children",
        {
            "name": "Team",
            "picture": data_uri("image/gif", image_bytes("GIF")),
            "branding": {"display_name": "The Team"},
        },
    )
    assert child.status_code == 201, child.json
    assert child.json["branding"]["display_name"] == "The Team"
    assert served(client, child.json["picture"]).mimetype == "image/gif"


# -- pictures: URLs ---------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: Any) -> list[str]:
    """Any name looked up or connection opened (the service must never fetch a picture URL)."""
    seen: list[str] = []
    original = socket.getaddrinfo

    def watched(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(host))
        return original(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", watched)
    return seen


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.acme.example/logos/acme.png",
        "https://cdn.acme.example:8443/a/b%20c.png?v=2&size=large#top",
        "https://xn--bcher-kva.example/logo.gif",
    ],
)
def test_an_https_url_is_stored_as_given_and_never_fetched(
    alice: Any, pooled: dict[str, Any], state: Any, no_network: list[str], url: str
) -> None:
    response = alice.patch(pooled["path"], {"picture": url})
    assert response.status_code == 200, response.json
    assert response.json["picture"] == url
    assert alice.post(orgs(pooled["ws"]), {"name": "Other", "picture": url}).json["picture"] == url
    assert [host for host in no_network if "example" in host] == []
    assert picture_rows(state) == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.acme.example/logo.png",
        "HTTPS://cdn.acme.example/logo.png",
        "ftp://cdn.acme.example/logo.png",
        "javascript:alert(1)",
        "//cdn.acme.example/logo.png",
        "https://",
        "https:///logo.png",
        "https://user:secret@cdn.acme.example/logo.png",
        "https://user@cdn.acme.example/logo.png",
        "https://127.0.0.1/logo.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/logo.png",
        "https://localhost/logo.png",
        "https://intranet/logo.png",
        "https://-bad.example/logo.png",
        "https://cdn.acme.example:0/logo.png",
        "https://cdn.acme.example:99999/logo.png",
        "https://cdn.acme.example/a b.png",
        "https://cdn.acme.example\\@evil.example/",
        "https://exämple.com/logo.png",
        "https://cdn.acme.example/%zz.png",
        "https://cdn.acme.example/\u2028",
        "https://cdn.acme.example/\x7f",
        "https://cdn.acme.example/" + "a" * 2048,
        "https://cdn.acme.example./logo.png",
        "",
    ],
)
def test_bad_picture_urls_are_422_and_change_nothing(alice: Any, pooled: dict[str, Any], url: str) -> None:
    error = assert_error(alice.patch(pooled["path"], {"picture": url}), 422, "validation_failed")
    assert "picture" in error["errors"], error
    assert alice.get(pooled["path"]).json == pooled["root"]


# -- pictures: uploads ------------------------------------------------------------------------


def test_an_upload_is_decoded_reencoded_and_served(alice: Any, pooled: dict[str, Any], client: Any, state: Any) -> None:
    """A JPEG's EXIF (a location, a camera) is not kept: the picture is written anew,
    its orientation applied."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    exif[0x010F] = "SecretCam"
    photo = image_bytes("JPEG", size=(40, 20), exif=exif.tobytes())
    response = alice.patch(pooled["path"], {"picture": data_uri("image/jpeg", photo)})
    assert response.status_code == 200, response.json
    image = served(client, response.json["picture"])
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert b"SecretCam" not in image.data and b"Exif" not in image.data
    assert Image.open(io.BytesIO(image.data)).size == (20, 40)  # upright
    with state.db.read() as session:
        stored = session.scalars(select(OrganizationPicture)).one()
    assert stored.organization_id == pooled["root"]["id"] and stored.content_type == "image/jpeg"
    assert response.json["picture"].endswith(f"/organizations/{pooled['root']['id']}/pictures/{stored.digest}")


def test_a_pngs_text_chunks_are_not_kept(alice: Any, pooled: dict[str, Any], client: Any) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Someone Private")
    raw = image_bytes("PNG", mode="RGBA", pnginfo=info)
    url = alice.patch(pooled["path"], {"picture": data_uri("image/png", raw)}).json["picture"]
    image = served(client, url)
    assert b"Someone Private" not in image.data and Image.open(io.BytesIO(image.data)).mode == "RGBA"


def test_an_animated_gif_is_kept_and_served(alice: Any, pooled: dict[str, Any], client: Any) -> None:
    raw = gif_frames(3)
    url = alice.patch(pooled["path"], {"picture": data_uri("image/gif", raw)}).json["picture"]
    image = served(client, url)
    assert image.data == raw and image.mimetype == "image/gif"


def svg() -> bytes:
    return b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@pytest.mark.parametrize(
    "picture",
    [
        data_uri("image/svg+xml", svg()),
        data_uri("image/png", svg()),  # SVG that claims to be a PNG
        data_uri("image/jpeg", image_bytes("PNG")),  # a PNG that claims to be a JPEG
        data_uri("image/gif", image_bytes("PNG")),
        data_uri("image/webp", image_bytes("WEBP")),
        data_uri("image/bmp", image_bytes("BMP")),
        data_uri("image/png", image_bytes("BMP")),
        data_uri("image/png", image_bytes("PNG", size=(64, 64))[:-40]),  # truncated
        data_uri("image/jpeg", image_bytes("JPEG", size=(64, 64))[:300]),  # truncated
        data_uri("image/gif", gif_frames(3)[:-30]),  # truncated animation
        data_uri("image/gif", gif_frames(3)[:-1]),  # no trailer: frames may be missing
        data_uri("image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40),  # a PNG signature, then nothing
        data_uri("image/png", png_header_only(30_000, 30_000)),  # past Pillow's DecompressionBombError
        data_uri("image/png", png_header_only(5000, 4000)),  # past our own pixel cap, below Pillow's
        data_uri("image/png", image_bytes("PNG", size=(2049, 2048), mode="1")),  # a whole one (a 2 KiB bomb)
        data_uri("image/jpeg", image_bytes("JPEG", size=(4032, 3024))),  # a 12-megapixel photo
        data_uri("image/png", png_header_only(0, 10)),
        data_uri("image/gif", gif_frames(pictures.MAX_FRAMES + 1)),  # a frame bomb
        "data:image/png;base64,",
        "data:image/png;base64,iVBORw0KGgo",  # not a whole number of base64 quanta
        "data:image/png;base64,iVBO-w0K",  # not the standard alphabet
        "data:image/png;base64, iVBORw0K",
        "data:image/PNG;base64,iVBORw0K",
        "data:image/png,iVBORw0K",  # not base64
        "data:image/png;charset=utf-8;base64,iVBORw0K",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "data:,hello",
    ],
    ids=lambda value: value[:40],
)
def test_what_is_not_a_jpeg_png_or_gif_as_claimed_is_422(
    alice: Any, pooled: dict[str, Any], state: Any, picture: str
) -> None:
    error = assert_error(alice.patch(pooled["path"], {"picture": picture}), 422, "validation_failed")
    assert list(error["errors"]) == ["picture"], error
    assert alice.get(pooled["path"]).json == pooled["root"]
    assert_error(alice.post(orgs(pooled["ws"]), {"name": "New", "picture": picture}), 422, "validation_failed")
    assert len(alice.get(orgs(pooled["ws"])).json["data"]) == 1 and picture_rows(state) == 0


def test_an_animation_that_decodes_to_too_many_pixels_is_422(
    alice: Any, pooled: dict[str, Any], monkeypatch: Any
) -> None:
    monkeypatch.setattr(pictures, "MAX_ANIMATION_PIXELS", 10 * 10 * 3)
    path = pooled["path"]
    assert alice.patch(path, {"picture": data_uri("image/gif", gif_frames(3, (10, 10)))}).status_code == 200
    error = assert_error(
        alice.patch(path, {"picture": data_uri("image/gif", gif_frames(4, (10, 10)))}), 422, "validation_failed"
    )
    assert "pixels" in error["errors"]["picture"][0]


def test_an_oversized_data_uri_is_422_before_anything_is_decoded(
    alice: Any, pooled: dict[str, Any], monkeypatch: Any
) -> None:
    decoded: list[str] = []
    b64decode, image_open = pictures.base64.b64decode, pictures.Image.open  # type: ignore[attr-defined]

    def spy_b64decode(text: Any, *args: Any, **kwargs: Any) -> Any:
        if len(text) > pictures.MAX_BASE64_CHARS:
            decoded.append("b64decode")
        return b64decode(text, *args, **kwargs)

    monkeypatch.setattr(pictures.base64, "b64decode", spy_b64decode)  # type: ignore[attr-defined]
    monkeypatch.setattr(pictures.Image, "open", lambda *a, **k: decoded.append("open") or image_open(*a, **k))  # type: ignore[attr-defined]
    over = "data:image/png;base64," + "A" * (pictures.MAX_BASE64_CHARS + 4)
    error = assert_error(alice.patch(pooled["path"], {"picture": over}), 422, "validation_failed")
    assert "2 MB" in error["errors"]["picture"][0] and decoded == []
    assert alice.get(pooled["path"]).json == pooled["root"]


def test_an_image_of_2_mib_is_accepted_and_a_byte_more_is_not(alice: Any, pooled: dict[str, Any]) -> None:
    """The limit is on the decoded bytes (2 MiB); a PNG may carry ancillary data to reach it."""
    raw = image_bytes("PNG", size=(4, 4))
    filler = pictures.MAX_BYTES - len(raw) - 12  # a private ancillary chunk: 12 bytes of framing
    chunk = b"prVt" + b"\x00" * filler
    at_limit = raw[:-12] + struct.pack(">I", filler) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[-12:]
    assert len(at_limit) == pictures.MAX_BYTES
    assert alice.patch(pooled["path"], {"picture": data_uri("image/png", at_limit)}).status_code == 200
    over = at_limit[:-12] + b"\x00" + at_limit[-12:]
    assert_error(alice.patch(pooled["path"], {"picture": data_uri("image/png", over)}), 422, "validation_failed")


def test_bodies_past_4_mib_are_413_and_other_routes_keep_1_mib(alice: Any, pooled: dict[str, Any]) -> None:
    huge = "data:image/png;base64," + "A" * (4 * 1024 * 1024)
    assert_error(alice.patch(pooled["path"], {"picture": huge}), 413, "payload_too_large")
    assert_error(
        alice.post("/workspaces", {"name": "x", "billing_mode": "single", "description": "a" * (1 << 20)}),
        413,
        "payload_too_large",
    )


def test_replacing_or_removing_a_picture_retires_its_url(
    alice: Any, pooled: dict[str, Any], client: Any, state: Any
) -> None:
    path = pooled["path"]
    first = alice.patch(path, {"picture": data_uri("image/png", image_bytes("PNG"))}).json["picture"]
    second = alice.patch(path, {"picture": data_uri("image/png", image_bytes("PNG", size=(3, 3)))}).json["picture"]
    assert first != second
    assert_error(served(client, first), 404, "not_found")
    assert served(client, second).status_code == 200
    assert (
        alice.patch(path, {"picture": "https://cdn.acme.example/logo.png"}).json["picture"]
        == "https://cdn.acme.example/logo.png"
    )
    assert_error(served(client, second), 404, "not_found")
    assert picture_rows(state) == 0
    again = alice.patch(path, {"picture": RED_DOT}).json["picture"]
    assert alice.patch(path, {"picture": None}).json["picture"] is None
    assert_error(served(client, again), 404, "not_found")
    assert picture_rows(state) == 0


def test_deleting_an_organization_deletes_its_picture(alice: Any, pooled: dict[str, Any], state: Any) -> None:
    child = alice.post(f"{pooled['path']}/children", {"name": "Team", "picture": RED_DOT}).json
    alice.patch(pooled["path"], {"picture": RED_DOT})
    assert picture_rows(state) == 2
    assert alice.delete(pooled["path"]).status_code == 204
    assert picture_rows(state) == 0 and child["picture"]


def test_a_picture_is_served_without_a_token_as_an_inert_image(alice: Any, pooled: dict[str, Any], client: Any) -> None:
    url = alice.patch(pooled["path"], {"picture": RED_DOT}).json["picture"]
    image = served(client, url)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
    assert image.headers["X-Content-Type-Options"] == "nosniff"
    assert image.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    assert image.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = image.headers["ETag"]
    path = url.removeprefix("http://localhost")
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
    # Another organization's id with this digest is nothing.
    other = alice.post(orgs(pooled["ws"]), {"name": "Other"}).json
    assert_error(client.get(path.replace(pooled["root"]["id"], other["id"])), 404, "not_found")


# -- who may set them -------------------------------------------------------------------------


def test_only_admins_of_the_workspace_set_branding(
    alice: Any, as_user: Any, pooled: dict[str, Any], monkeypatch: Any, state: Any
) -> None:
    """Another workspace's member gets 404, a viewer 403, an archived workspace 409,
    and none of them gets an image decoded."""
    decoded: list[Any] = []
    real_decode = pictures.decode
    monkeypatch.setattr(pictures, "decode", lambda upload: decoded.append(upload) or real_decode(upload))
    alice.add_member(pooled["ws"], "vera", "viewer")
    mallory, vera = as_user("mallory"), as_user("vera")
    mallory.workspace("pooled")
    body = {"picture": RED_DOT, "branding": {"display_name": "Hijacked"}}
    assert_error(mallory.patch(pooled["path"], body), 404, "not_found")
    assert_error(mallory.post(f"{pooled['path']}/children", {"name": "x", **body}), 404, "not_found")
    assert_error(vera.patch(pooled["path"], body), 403, "permission_denied")
    assert_error(vera.post(orgs(pooled["ws"]), {"name": "x", **body}), 403, "permission_denied")
    assert decoded == []
    assert alice.get(pooled["path"]).json == pooled["root"] and picture_rows(state) == 0
    assert alice.delete(f"/workspaces/{pooled['ws']}").status_code == 204
    assert_error(alice.patch(pooled["path"], body), 409, "workspace_archived")
    assert decoded == [] and picture_rows(state) == 0


# -- the public branding read -----------------------------------------------------------------


@pytest.fixture
def branded(alice: Any, pooled: dict[str, Any]) -> dict[str, Any]:
    org = alice.patch(
        pooled["path"],
        {
            "picture": RED_DOT,
            "branding": {
                "display_name": "ACME Corp",
                "login_hint": "acme-corp",
                "colors": {"primary": "#FF5733", "page_background": "#FFFFFF"},
            },
        },
    ).json
    return org  # type: ignore[no-any-return]


def test_public_branding_by_id_or_external_id_without_a_token(client: Any, branded: dict[str, Any]) -> None:
    expected = {
        "organization_id": branded["id"],
        "display_name": "ACME Corp",
        "picture": branded["picture"],
        "login_hint": "acme-corp",
        "colors": {"primary": "#FF5733", "page_background": "#FFFFFF"},
    }
    for key in (branded["id"], branded["external_id"]):
        response = client.get(f"/organizations/{key}/branding")
        assert response.status_code == 200, response.json
        assert response.json == expected and list(response.json) == list(expected)
        assert response.headers["Cache-Control"] == "no-store"
    # A token, even a bad one, is neither needed nor read.
    assert (
        client.get(f"/organizations/{branded['id']}/branding", headers={"Authorization": "Bearer nonsense"}).json
        == expected
    )


def test_public_branding_says_nothing_about_billing(alice: Any, client: Any) -> None:
    ws = alice.workspace("assigned")
    account = alice.account(ws)["id"]
    org = alice.post(orgs(ws), {"name": "Internal name", "billing_account_id": account, "limits": {"users": 3}}).json
    response = client.get(f"/organizations/{org['external_id']}/branding")
    assert set(response.json) == PUBLIC_KEYS
    # Unbranded: the name stands in for the display name; nothing else is set.
    assert response.json == {
        "organization_id": org["id"],
        "display_name": "Internal name",
        "picture": None,
        "login_hint": None,
        "colors": {"primary": None, "page_background": None},
    }
    text = response.get_data(as_text=True)
    assert account not in text and ws not in text and "limit" not in text and "usage" not in text


@pytest.mark.parametrize("key", ["org_doesnotexist00000", "00000000-0000-4000-8000-000000000000", "x", "%20"])
def test_an_unknown_id_is_404(client: Any, branded: dict[str, Any], key: str) -> None:
    assert_error(client.get(f"/organizations/{key}/branding"), 404, "not_found")


def statements_of(state: Any, call: Any) -> tuple[list[str], Any]:
    """The SQL statements a call sends to the database, and its answer."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(state.db.engine, "before_cursor_execute", count)
    try:
        answer = call()
    finally:
        event.remove(state.db.engine, "before_cursor_execute", count)
    return seen, answer


def test_an_unknown_id_costs_what_a_known_one_does(
    client: Any, branded: dict[str, Any], state: Any, monkeypatch: Any
) -> None:
    """Not an existence oracle: the same statements, and the answer built (the
    same work) before an unknown id is a 404."""
    built: list[str] = []
    real = branding.picture_url
    monkeypatch.setattr(branding, "picture_url", lambda *args: built.append(args[0]) or real(*args))
    counts: dict[str, list[str]] = {}
    for name, key in [
        ("id", branded["id"]),
        ("external_id", branded["external_id"]),
        ("unknown id", "org_" + "Z" * 16),
        ("unknown external_id", "00000000-0000-4000-8000-000000000000"),
    ]:
        counts[name], response = statements_of(state, partial(client.get, f"/organizations/{key}/branding"))
        assert response.status_code == (404 if name.startswith("unknown") else 200)
    assert len({tuple(statements) for statements in counts.values()}) == 1, counts  # the very same statements
    assert [s for s in counts["id"] if s.startswith("SELECT")] and len(
        counts["id"]
    ) <= 2  # one query (SQLite: BEGIN too)
    assert len(built) == 4


# -- the rate limit ---------------------------------------------------------------------------


def test_the_public_routes_are_rate_limited_per_client_address(
    client: Any, branded: dict[str, Any], state: Any
) -> None:
    path = f"/organizations/{branded['id']}/branding"
    burst = int(state.public_limiter.tolerance / state.public_limiter.interval) + 1
    for _ in range(burst):
        assert client.get(path).status_code == 200
    error = assert_error(client.get(path), 429, "rate_limited")
    assert error["type"] == "rate_limit_error"
    limited = client.get(path)
    assert int(limited.headers["Retry-After"]) >= 1
    # An unknown id is counted the same (the limit can't be dodged by probing).
    assert_error(client.get("/organizations/org_nope/branding"), 429, "rate_limited")
    # Another address has its own budget; X-Forwarded-For is not trusted by default.
    assert client.get(path, environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 200
    assert_error(client.get(path, headers={"X-Forwarded-For": "198.51.100.7"}), 429, "rate_limited")
    # The picture has a budget of its own.
    assert served(client, branded["picture"]).status_code == 200


@pytest.fixture
def proxied_app(config: Any, session_app: Any) -> Iterator[Any]:
    """The service behind one proxy (Heroku's router), with a budget of 2 requests."""
    app = create_app(
        dataclasses.replace(config, trusted_proxy_count=1, public_rate_limit_per_minute=2),
        webhook_transport=lambda payload, headers: 200,
    )
    yield app
    app.extensions["billing"].db.dispose()


def test_behind_a_trusted_proxy_the_last_forwarded_hop_is_the_client(
    proxied_app: Any, alice: Any, branded: dict[str, Any]
) -> None:
    client = proxied_app.test_client()
    path = f"/organizations/{branded['id']}/branding"
    router = {"REMOTE_ADDR": "10.1.2.3"}
    # What the client writes into X-Forwarded-For comes first; the router appends the address it saw.
    for spoof in ("1.1.1.1", "2.2.2.2"):
        response = client.get(
            path,
            environ_base=router,
            headers={"X-Forwarded-For": f"{spoof}, 203.0.113.5", "X-Forwarded-Proto": "https"},
        )
        assert response.status_code == 200
        assert response.json["picture"].startswith("https://localhost/")  # our URLs as the client reaches us
    assert_error(
        client.get(path, environ_base=router, headers={"X-Forwarded-For": "3.3.3.3, 203.0.113.5"}), 429, "rate_limited"
    )
    assert client.get(path, environ_base=router, headers={"X-Forwarded-For": "203.0.113.6"}).status_code == 200


def test_the_limiter_refills_and_stays_bounded() -> None:
    now = [1000.0]
    limiter = RateLimiter(60, burst=3, max_clients=2, clock=lambda: now[0])
    assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait("a") == pytest.approx(1.0)
    now[0] += 1.0
    assert limiter.wait("a") == 0.0 and limiter.wait("a") > 0
    limiter.wait("b")
    limiter.wait("c")
    assert len(limiter._ready_at) <= 2  # the least recently admitted is forgotten


@pytest.mark.parametrize(
    "address, key",
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        (None, "unknown"),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_by_its_64(address: str | None, key: str) -> None:
    assert client_key(address) == key


# -- the document -----------------------------------------------------------------------------


def test_the_document_states_the_fields_and_the_public_route(client: Any) -> None:
    spec = client.get("/openapi.json").json
    schemas = spec["components"]["schemas"]
    assert {"picture", "branding"} <= set(schemas["Organization"]["required"])
    assert schemas["Organization"]["properties"]["picture"]["nullable"] is True
    for body in ("OrganizationCreate", "OrganizationUpdate", "ChildCreate"):
        picture = schemas[body]["properties"]["picture"]
        assert picture["pattern"] == pictures.PATTERN and picture["maxLength"] == pictures.MAX_LENGTH
        assert picture["nullable"] is True
        assert "'#/components/schemas/BrandingInput'" in str(schemas[body]["properties"]["branding"])
    colors = schemas["BrandingColorsInput"]["properties"]
    assert colors["primary"]["pattern"] == "^#[0-9A-Fa-f]{6}$"
    assert schemas["BrandingInput"]["additionalProperties"] is False
    operation = spec["paths"]["/organizations/{organizationId}/branding"]["get"]
    assert operation["security"] == [] and operation["tags"] == ["Public"]
    assert operation["operationId"] == "retrievePublicBranding"
    assert set(operation["responses"]) == {"200", "404", "422", "429", "500", "default"}
    parameter = spec["paths"]["/organizations/{organizationId}/branding"]["parameters"][0]
    assert parameter["name"] == "organizationId" and "external_id" in parameter["description"]
    rate_limited = spec["components"]["responses"][operation["responses"]["429"]["$ref"].split("/")[-1]]
    assert rate_limited["headers"]["Retry-After"]["required"] is True
    assert rate_limited["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert set(schemas["PublicBranding"]["required"]) == PUBLIC_KEYS == set(schemas["PublicBranding"]["properties"])
    assert not [path for path in spec["paths"] if "/pictures/" in path]  # browsers load those, not clients
    example = pictures.parse(RED_DOT)
    assert isinstance(example, pictures.DataUri) and pictures.decode(example).content_type == "image/png"
