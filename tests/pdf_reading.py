"""Reading a PDF as a viewer must: the header, the cross-reference table that finds each object at
its byte offset, the trailer, and the text each page's content stream shows (its `Tj` strings)."""

from __future__ import annotations

import re

_STRING = re.compile(rb"\((?:[^\\)]|\\.)*\)\s*Tj", re.S)


def _unescape(literal: bytes) -> str:
    out, i = bytearray(), 0
    while i < len(literal):
        if literal[i : i + 1] == b"\\":
            octal = re.match(rb"[0-7]{1,3}", literal[i + 1 : i + 4])
            if octal:
                out.append(int(octal.group(), 8))
                i += 1 + len(octal.group())
                continue
            out += literal[i + 1 : i + 2]
            i += 2
        else:
            out += literal[i : i + 1]
            i += 1
    return out.decode("cp1252")


def pdf_text(data: bytes) -> list[list[str]]:
    """The text of each page; AssertionError where the file is not a well-formed PDF."""
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF")
    startxref = int(re.findall(rb"startxref\s+(\d+)\s+%%EOF", data)[-1])
    assert data[startxref:].startswith(b"xref")
    header = re.match(rb"xref\s+0 (\d+)\s+", data[startxref:])
    assert header is not None
    count, table = int(header.group(1)), startxref + header.end()
    objects: dict[int, bytes] = {}
    for number in range(count):
        entry = data[table + 20 * number : table + 20 * (number + 1)]
        assert re.fullmatch(rb"\d{10} \d{5} [nf](?: \n|\r\n| \r)", entry), entry
        if entry[17:18] == b"n":
            offset = int(entry[:10])
            assert data[offset:].startswith(b"%d 0 obj" % number), (number, data[offset : offset + 20])
            objects[number] = data[offset : data.index(b"endobj", offset)]
    trailer = data[table + 20 * count : startxref + data[startxref:].index(b"startxref")]
    root = int(re.search(rb"/Root (\d+) 0 R", trailer).group(1))
    assert re.search(rb"/Size %d\b" % count, trailer)
    pages = int(re.search(rb"/Pages (\d+) 0 R", objects[root]).group(1))
    kids = [int(k) for k in re.findall(rb"(\d+) 0 R", re.search(rb"/Kids \[(.*?)\]", objects[pages]).group(1))]
    assert re.search(rb"/Count %d\b" % len(kids), objects[pages])
    texts = []
    for kid in kids:
        assert b"/Type /Page" in objects[kid]
        contents = int(re.search(rb"/Contents (\d+) 0 R", objects[kid]).group(1))
        stream = objects[contents]
        length = int(re.search(rb"/Length (\d+)", stream).group(1))
        start = stream.index(b"stream") + len(b"stream\n")
        content = stream[start : start + length]
        assert stream[start + length :].lstrip().startswith(b"endstream")
        assert content.lstrip().startswith(b"BT") and content.rstrip().endswith(b"ET")
        texts.append([_unescape(m.group()[1 : m.group().rindex(b")")]) for m in _STRING.finditer(content)])
    return texts
