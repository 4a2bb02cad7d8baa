"""An organization's picture: an HTTPS URL kept as given, or an uploaded image
that the service decodes, keeps and serves itself (API.md, Branding).

A URL is never fetched (that would let a request make the service reach any
host: SSRF); it is checked strictly and stored verbatim. An upload is a
`data:image/{jpeg,png,gif};base64,...` URI of at most 2 MiB. Its content
decides, not its declared type: it must decode with Pillow as the format it
claims, within a pixel budget checked on the header before any pixel is
decoded. JPEG and PNG stills are re-encoded, which drops EXIF, XMP and text
chunks (a photo's location, say); a GIF or an animated PNG is kept byte for
byte once every frame has decoded (re-encoding an animation faithfully is not
cheap, and a GIF carries no EXIF). Every refusal is a `PictureRefused` (the
caller answers 422).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 2 * 1024 * 1024  # "at most 2 MB" of image, decoded
# The longest base64 text of MAX_BYTES, and so the longest data URI: checked before decoding.
MAX_BASE64_CHARS = 4 * ((MAX_BYTES + 2) // 3)
MAX_URL_LENGTH = 2048
# Our own pixel budget (2048 x 2048: a logo's, 16 MiB decoded as RGBA), far below
# Pillow's MAX_IMAGE_PIXELS, which stays the library's backstop (past twice it,
# Image.open raises DecompressionBombError). Checked on the header: nothing decoded yet.
MAX_PIXELS = 2048 * 2048
MAX_FRAMES = 100
MAX_ANIMATION_PIXELS = 4 * MAX_PIXELS  # frames x pixels decoded to check an animation

# Pillow warns (DecompressionBombWarning) only past its own limit, which ours is
# below: such an image is refused anyway, so the warning would only be noise in the log.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
# How a GIF and a PNG end: the trailer byte, and the IEND chunk with its CRC.
_TRAILERS = {"GIF": b"\x3b", "PNG": b"IEND\xaeB`\x82"}
DATA_URI_PREFIX = re.compile(r"data:(image/(?:jpeg|png|gif));base64,")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# https://host[:port][/path][?query][#fragment], in RFC 3986's characters only: no
# credentials (no "@" before the path), no IP literal, no space, backslash or
# anything a browser would rewrite.
_HTTPS_URL = re.compile(
    r"https://(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<rest>[/?#][!#$%&'()*+,\-./0-9:;=?@A-Z\[\]_a-z~]*)?"
)
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

# What the OpenAPI document says a picture may be (the checks here say more).
PATTERN = (
    r"^(https://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][!#$%&'()*+,\-./0-9:;=?@A-Z\[\]_a-z~]*)?"
    r"|data:image/(jpeg|png|gif);base64,[A-Za-z0-9+/]*={0,2})$"
)
MAX_LENGTH = max(MAX_URL_LENGTH, len("data:image/jpeg;base64,") + MAX_BASE64_CHARS)


class PictureRefused(ValueError):
    """The picture can't be accepted; the message says why, for the client."""


@dataclass(frozen=True)
class DataUri:
    """An upload as sent: its declared media type and its base64 text (not yet decoded)."""

    media_type: str
    base64_text: str


@dataclass(frozen=True)
class StoredPicture:
    """An upload once decoded: the bytes the service serves, and their type and digest."""

    content_type: str
    data: bytes
    digest: str  # sha256 of `data`, hex: the picture's URL names it (a new picture, a new URL)


def parse(value: str) -> str | DataUri:
    """A checked HTTPS URL (returned as given) or a data URI whose size and
    alphabet are checked (not decoded yet). Raises PictureRefused."""
    if value.startswith("data:"):
        return _data_uri(value)
    return check_https_url(value)


def _data_uri(value: str) -> DataUri:
    prefix = DATA_URI_PREFIX.match(value)
    if prefix is None:
        raise PictureRefused("A data URI must be data:image/jpeg, image/png or image/gif, ;base64, then the image.")
    text = value[prefix.end() :]
    if len(text) > MAX_BASE64_CHARS:  # before decoding anything
        raise PictureRefused(f"The image is larger than {MAX_BYTES // (1024 * 1024)} MB.")
    if not text:
        raise PictureRefused("The data URI holds no image.")
    if len(text) % 4 or not _BASE64.fullmatch(text):
        raise PictureRefused("The data URI's base64 text is not valid (cut short, or not standard base64).")
    return DataUri(prefix.group(1), text)


def check_https_url(url: str) -> str:
    """The URL, unchanged, if it is a plain https URL of a public host name
    (no credentials, IP address, single-label host, control character or
    space); else PictureRefused. It is never fetched."""
    if len(url) > MAX_URL_LENGTH:
        raise PictureRefused(f"A picture URL is at most {MAX_URL_LENGTH} characters.")
    match = _HTTPS_URL.fullmatch(url)
    if match is None:
        raise PictureRefused("A picture must be an https:// URL (ASCII, no credentials or spaces) or a data URI.")
    host, port, rest = match["host"], match["port"], match["rest"] or ""
    labels = host.split(".")
    if (
        len(host) > 253
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise PictureRefused("A picture URL's host must be a public host name (not an IP address or localhost).")
    if port is not None and not 0 < int(port) < 65536:
        raise PictureRefused("A picture URL's port must be from 1 to 65535.")
    if _BAD_PERCENT.search(rest):
        raise PictureRefused("A picture URL's % must start a percent-encoded byte (%XX).")
    return url


def decode(upload: DataUri) -> StoredPicture:
    """The image to keep: decoded as the format it claims, within our pixel
    and frame budgets; raises PictureRefused for anything else."""
    if len(upload.base64_text) > MAX_BASE64_CHARS:  # parse() checked it; never decode past it
        raise PictureRefused(f"The image is larger than {MAX_BYTES // (1024 * 1024)} MB.")
    try:
        raw = base64.b64decode(upload.base64_text, validate=True)
    except binascii.Error:
        raise PictureRefused("The data URI's base64 text is not valid.") from None
    if len(raw) > MAX_BYTES:
        raise PictureRefused(f"The image is larger than {MAX_BYTES // (1024 * 1024)} MB.")
    expected = FORMATS[upload.media_type]
    try:
        with Image.open(io.BytesIO(raw), formats=[expected]) as image:
            return _checked(image, raw, upload.media_type)
    except PictureRefused:
        raise
    except UnidentifiedImageError:
        raise PictureRefused(f"The data is not a {expected} image, as its data URI says.") from None
    except Image.DecompressionBombError:
        raise PictureRefused(f"The image has more than {MAX_PIXELS:,} pixels.") from None
    except Exception:
        raise PictureRefused(f"The {expected} image could not be decoded (truncated or corrupt).") from None


def _checked(image: Image.Image, raw: bytes, media_type: str) -> StoredPicture:
    width, height = image.size
    if width < 1 or height < 1 or width * height > MAX_PIXELS:  # the header's size: nothing decoded yet
        raise PictureRefused(f"The image has more than {MAX_PIXELS:,} pixels.")
    if image.format == "MPO" or not getattr(image, "is_animated", False):  # MPO: a JPEG's first picture
        image.load()  # every pixel: a truncated or corrupt image fails here
        if image.format != "GIF":
            return _stored(media_type, _reencoded(image))
    else:
        _decode_every_frame(image, width * height)
    # Kept as sent: it must end as its format ends, or frames may be missing (Pillow stops at the end of the data).
    if not raw.endswith(_TRAILERS[str(image.format)]):
        raise PictureRefused(f"The {image.format} image is truncated.")
    return _stored(media_type, raw)


def _decode_every_frame(image: Image.Image, pixels: int) -> None:
    """Decode every pixel of every frame of an animation, refusing once the
    frames or the pixels they cost pass the budget: a small file of many
    frames is a bomb too."""
    frame = 0
    while True:
        if (frame + 1) * pixels > MAX_ANIMATION_PIXELS:
            raise PictureRefused(f"The animation decodes to more than {MAX_ANIMATION_PIXELS:,} pixels.")
        image.load()
        frame += 1
        try:
            image.seek(frame)
        except EOFError:
            return
        if frame >= MAX_FRAMES:
            raise PictureRefused(f"An animation has at most {MAX_FRAMES} frames.")


def _reencoded(image: Image.Image) -> bytes:
    """A JPEG or PNG still written anew: its pixels, colour profile and (PNG)
    transparency survive, nothing else; a JPEG's EXIF orientation is applied first."""
    out = io.BytesIO()
    icc_profile = image.info.get("icc_profile")
    if image.format == "PNG":
        image.save(out, format="PNG", icc_profile=icc_profile)
    else:  # JPEG, or MPO: a JPEG with more pictures after the first (kept alone)
        ImageOps.exif_transpose(image).save(out, format="JPEG", quality=90, icc_profile=icc_profile)
    return out.getvalue()


def _stored(media_type: str, data: bytes) -> StoredPicture:
    return StoredPicture(content_type=media_type, data=data, digest=hashlib.sha256(data).hexdigest())
