"""Fills fuzz/corpus/<target>/ with seeds for scripts/fuzz: the document fixtures, plus small
hostile inputs of the kinds issue #11 names (decompression bombs, deep nesting, billion laughs,
`../` zip entry names, truncated files), so the fuzzer starts next to the bounds rather than
having to find them. Generated at run time, so the repository holds no binary seeds.

Usage: fuzz_seeds.py <repo root>. Existing corpus files are kept (the corpus grows across runs).
"""

import hashlib
import io
import sys
import zipfile
import zlib
from pathlib import Path

root = Path(sys.argv[1])
fixtures = root / "tests/fixtures/documents"
corpus = root / "fuzz/corpus"

seeds: dict[str, list[bytes]] = {t: [] for t in (
    "cloudformation", "terraform", "terraform_plan", "pdf", "docx", "markdown", "detect")}


def fixture_files(pattern: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(fixtures.glob(pattern))
            if not p.name.endswith(".expected.json")]


def truncated(data: bytes) -> list[bytes]:
    return [data[: len(data) // 2], data[: len(data) * 9 // 10]]


for data in fixture_files("cloudformation/*"):
    seeds["cloudformation"] += [data, *truncated(data)]
for data in fixture_files("terraform/*.tf"):
    seeds["terraform"] += [data, *truncated(data)]
for data in fixture_files("terraform/*.json"):
    seeds["terraform_plan"] += [data, *truncated(data)]
for data in fixture_files("prose/*.pdf"):
    seeds["pdf"] += [data, *truncated(data)]
for data in fixture_files("prose/*.docx"):
    seeds["docx"] += [data, *truncated(data)]
for pattern in ("prose/*.md", "prose/*.txt"):
    for data in fixture_files(pattern):
        seeds["markdown"] += [data, *truncated(data)]

# Nesting just past the fuzz targets' max_depth (64), and far past it.
for n in (65, 5000):
    seeds["cloudformation"].append(b'{"Resources":' + b"[" * n + b"]" * n + b"}")
    seeds["cloudformation"].append(b"Resources:\n  A: " + b"[" * n + b"]" * n + b"\n")
    seeds["terraform_plan"].append(
        b'{"format_version":"1.2","values":' + b"[" * n + b"]" * n + b"}")
    seeds["terraform"].append(b'resource "aws_s3_bucket" "b" {\n  x = ' + b"[" * n + b"]" * n
                              + b"\n}\n")
    seeds["markdown"].append(b"> " * n + b"Data is encrypted at rest.\n")

# Billion laughs in YAML aliases.
laughs = [b"Resources:", b'  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
for i in range(1, 10):
    laughs.append(b"  a%d: &a%d [" % (i, i) + b",".join([b"*a%d" % (i - 1)] * 9) + b"]")
seeds["cloudformation"].append(b"\n".join(laughs) + b"\n")


def docx(document: bytes, name: str = "word/document.xml",
         method: int = zipfile.ZIP_DEFLATED, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr("[Content_Types].xml", b"<Types/>")
        z.writestr(name, document)
        for k, v in (extra or {}).items():
            z.writestr(k, v)
    return buf.getvalue()


W = b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
para = b"<w:p><w:r><w:t>Customer data is encrypted at rest with KMS.</w:t></w:r></w:p>"
seeds["docx"] += [
    docx(W + para + b"</w:body></w:document>"),
    # Decompression bomb: 64 MiB of spaces deflate to about 64 KiB.
    docx(W + para + b" " * (64 << 20) + b"</w:body></w:document>"),
    # Billion laughs through a DOCTYPE.
    docx(b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;">]>'
         + W + b"<w:p><w:r><w:t>&b;</w:t></w:r></w:p></w:body></w:document>"),
    # Entry names that climb out of any directory they would be extracted to.
    docx(W + para + b"</w:body></w:document>", extra={"../../etc/passwd": b"x",
                                                      "/abs/path": b"y"}),
    docx(W + b"<w:p>" * 5000 + b"</w:body></w:document>"),
    docx(W + para + b"</w:body></w:document>", method=zipfile.ZIP_STORED),
]


def pdf(content: bytes, filtered: bool = True) -> bytes:
    stream = zlib.compress(content, 9) if filtered else content
    flt = b"/Filter /FlateDecode " if filtered else b""
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /Resources << /Font << /F1 5 0 R >> >> "
        b"/MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< " + flt + b"/Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


text = b"BT /F1 12 Tf 72 720 Td (Data is encrypted at rest with KMS.) Tj ET"
seeds["pdf"] += [
    pdf(text),
    pdf(text, filtered=False),
    # Decompression bomb in a content stream: 64 MiB of spaces.
    pdf(text + b" " * (64 << 20)),
    # Deeply nested arrays in the content stream.
    pdf(b"[" * 5000 + b"]" * 5000 + text, filtered=False),
]

seeds["detect"] = [s for t in ("cloudformation", "terraform", "terraform_plan", "pdf", "docx",
                               "markdown") for s in seeds[t][:6]]

for target, items in seeds.items():
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    for data in items:
        (d / ("seed-" + hashlib.sha1(data).hexdigest())).write_bytes(data)
    print(f"{target}: {len(items)} seeds")
