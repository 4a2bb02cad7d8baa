"""A minimal PDF of text, written by hand per the PDF 1.4 syntax (ISO 32000-1, section 7).

Enough for the invoices the sandbox serves (`invoice_pdf`): A4 pages of Helvetica text, each
line a few pieces placed at a horizontal offset; lines that don't fit go on to the next page.
The file is a header, one object per catalog, page tree, font, page and content stream, the
cross-reference table (each entry exactly 20 bytes, offsets counted in bytes) and the trailer.
Streams are uncompressed. Text is WinAnsiEncoding (Windows-1252); a character it lacks prints
as "?".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4, in points
MARGIN = 56
FONTS = {"regular": "Helvetica", "bold": "Helvetica-Bold"}


@dataclass(frozen=True)
class Line:
    """One line of text: (offset from the left margin, text) pieces, in one font and size."""

    pieces: tuple[tuple[float, str], ...]
    size: float = 10.0
    bold: bool = False

    @property
    def height(self) -> float:
        return self.size * 1.5


def _string(text: str) -> bytes:
    """A PDF literal string: Windows-1252 bytes, with `\\`, `(`, `)` and non-ASCII bytes escaped."""
    out = bytearray(b"(")
    for byte in text.encode("cp1252", errors="replace"):
        if byte in b"\\()":
            out += b"\\" + bytes([byte])
        elif 32 <= byte < 127:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    out += b")"
    return bytes(out)


def _pages(lines: Sequence[Line]) -> list[list[tuple[float, Line]]]:
    """The lines by page, each with its baseline (from the bottom of the page)."""
    pages: list[list[tuple[float, Line]]] = [[]]
    y: float = PAGE_HEIGHT - MARGIN
    for line in lines:
        if y - line.height < MARGIN and pages[-1]:
            pages.append([])
            y = PAGE_HEIGHT - MARGIN
        y -= line.height
        pages[-1].append((y, line))
    return pages


def _content(page: list[tuple[float, Line]]) -> bytes:
    ops = [b"BT"]
    for y, line in page:
        font = b"/F2" if line.bold else b"/F1"
        ops.append(b"%s %.1f Tf" % (font, line.size))
        for x, text in line.pieces:
            ops.append(b"1 0 0 1 %.1f %.1f Tm %s Tj" % (MARGIN + x, y, _string(text)))
    ops.append(b"ET")
    return b"\n".join(ops)


def document(lines: Sequence[Line], *, title: str) -> bytes:
    """The PDF file of `lines`."""
    pages = _pages(lines)
    first_page = 5  # 1 catalog, 2 page tree, 3 and 4 fonts; then per page: the page, its content
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        *(
            b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>" % name.encode()
            for name in FONTS.values()
        ),
    ]
    for index, page in enumerate(pages):
        content = _content(page)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 3 0 R "
            b"/F2 4 0 R >> >> /Contents %d 0 R >>" % (PAGE_WIDTH, PAGE_HEIGHT, first_page + 2 * index + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    objects.append(b"<< /Title %s /Producer (Stripe sandbox) >>" % _string(title))
    info = len(objects)

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # the second line marks the file as binary
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        info,
        xref,
    )
    return bytes(out)
