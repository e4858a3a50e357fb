"""H1: the MIME structure behind FETCH sections (unit tests; no server)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caducee.gateway.imap import render
from caducee.mailboxes.imap_binary import seven_bit_parts
from caducee.mailboxes.imap_structure import (
    MessageStructure,
    decode_body,
    decode_words,
    find_part,
    parse_addresses,
    parse_message,
)

NESTED = (
    b"Subject: nested\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>caf\xc3\xa9</p>\r\n"
    b"--inner--\r\n"
    b"epilogue of inner\r\n"
    b"--outer\r\n"
    b'Content-Type: application/pdf; name="r.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment;\r\n filename="r.pdf"\r\n'
    b"\r\n" + base64.encodebytes(b"%PDF-1.4 data").replace(b"\n", b"\r\n") + b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: attached\r\n"
    b"From: =?utf-8?q?Caf=C3=A9?= <a@b.fr>\r\n"
    b"\r\n"
    b"single part body\r\n"
    b"--outer--\r\n"
)


@pytest.fixture(scope="module")
def nested() -> MessageStructure:
    return parse_message(NESTED)


def _body(structure: MessageStructure, numbers: list[int]) -> bytes:
    part = find_part(structure.root, numbers)
    assert part is not None
    return NESTED[part.body_start : part.end]


def test_h1_section_numbers_follow_rfc3501(nested: MessageStructure) -> None:
    assert _body(nested, [1, 1]) == b"caf=C3=A9"
    assert _body(nested, [1, 2]) == b"<p>caf\xc3\xa9</p>"
    assert _body(nested, [2]).startswith(b"JVBER")
    assert (
        _body(nested, [3])
        == b"Subject: attached\r\nFrom: =?utf-8?q?Caf=C3=A9?= <a@b.fr>\r\n\r\nsingle part body"
    )
    assert _body(nested, [3, 1]) == b"single part body"  # part 1 of a single-part attached message
    assert find_part(nested.root, [4]) is None
    assert find_part(nested.root, [1, 3]) is None
    assert find_part(nested.root, [3, 2]) is None


def test_h1_sections_header_text_mime(nested: MessageStructure) -> None:
    assert render.section(nested, NESTED, [3], b"HEADER") == (
        b"Subject: attached\r\nFrom: =?utf-8?q?Caf=C3=A9?= <a@b.fr>\r\n\r\n"
    )
    assert render.section(nested, NESTED, [3], b"TEXT") == b"single part body"
    mime = render.section(nested, NESTED, [2], b"MIME")
    assert mime is not None and mime.endswith(b'filename="r.pdf"\r\n\r\n')
    assert render.section(nested, NESTED, [2], b"HEADER") is None
    fields = render.section(nested, NESTED, [2], b"MIME")
    assert fields is not None
    assert render.filter_headers(fields, [b"CONTENT-DISPOSITION"], inverse=False) == (
        b'Content-Disposition: attachment;\r\n filename="r.pdf"\r\n\r\n'
    )
    assert render.filter_headers(fields, [b"CONTENT-DISPOSITION"], inverse=True).startswith(
        b"Content-Type: application/pdf"
    )
    assert render.section(nested, NESTED, [], b"HEADER.FIELDS", [b"SUBJECT"]) == (
        b"Subject: nested\r\n\r\n"
    )


def test_h1_binary_decodes_transfer_encodings(nested: MessageStructure) -> None:
    assert render.section(nested, NESTED, [2], None, binary=True) == b"%PDF-1.4 data"
    assert render.section(nested, NESTED, [1, 1], None, binary=True) == "café".encode()
    part = find_part(nested.root, [1, 2])
    assert part is not None and decode_body(NESTED, part) == "<p>café</p>".encode()


def test_h1_bodystructure_fields(nested: MessageStructure) -> None:
    plain = find_part(nested.root, [1, 1])
    assert plain is not None
    assert plain.params == [("charset", "us-ascii")]  # the default is made explicit
    assert (plain.size, plain.lines) == (9, 1)
    pdf = find_part(nested.root, [2])
    assert pdf is not None and pdf.disposition == "attachment"
    assert pdf.disposition_params == [("filename", "r.pdf")]
    structure = render.bodystructure(nested.root)
    assert structure.endswith(b' "mixed" ("boundary" "outer") NIL NIL NIL)')
    assert b'("text" "plain" ("charset" "us-ascii") NIL NIL "quoted-printable" 9 1 ' in structure
    attached = find_part(nested.root, [3])
    assert attached is not None and attached.children[0].envelope is not None
    assert attached.children[0].envelope.subject == "attached"


def test_h1_structure_survives_its_json_cache(nested: MessageStructure) -> None:
    again = MessageStructure.from_json(nested.to_json())
    assert render.bodystructure(again.root) == render.bodystructure(nested.root)
    assert render.envelope(again.envelope) == render.envelope(nested.envelope)
    assert again.header == nested.header and again.size == len(NESTED)


def test_h1_robust_against_broken_mime() -> None:
    unterminated = b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n\r\nno end\r\n'
    structure = parse_message(unterminated)
    assert len(structure.root.children) == 1
    assert render.section(structure, unterminated, [1], None) == b"no end\r\n"
    no_boundary = b"Content-Type: multipart/mixed\r\n\r\nplain really\r\n"
    assert parse_message(no_boundary).root.maintype == "text"
    digest = (
        b'Content-Type: multipart/digest; boundary="d"\r\n\r\n--d\r\n\r\nSubject: in digest\r\n'
        b"\r\nbody\r\n--d--\r\n"
    )
    entry = find_part(parse_message(digest).root, [1])
    assert entry is not None and (entry.maintype, entry.subtype) == ("message", "rfc822")
    bare_lf = b"Subject: lf only\n\nbody line\n"
    assert parse_message(bare_lf).root.body_start == len(b"Subject: lf only\n\n")
    deep = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
        for n in range(60)
    )
    assert parse_message(deep).size == len(deep)  # bounded depth, no recursion error


def test_h1_addresses_and_encoded_words() -> None:
    assert parse_addresses('"Dr Paul" <paul@labo.fr>, x@y.fr') == [
        ("Dr Paul", None, "paul", "labo.fr"),
        (None, None, "x", "y.fr"),
    ]
    assert parse_addresses("Patients: a@b.fr;") == [
        (None, None, "Patients", None),
        (None, None, "a", "b.fr"),
        (None, None, None, None),
    ]
    assert decode_words("=?utf-8?q?R=C3=A9sultats?= =?utf-8?b?VFNI?=") == "RésultatsTSH"
    assert decode_words("=?bogus-charset?q?x?=") == "=?bogus-charset?q?x?="


# -- binary parts made 7-bit at APPEND (RFC 3516 §4.3) ------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=300).map(lambda data: data + b"\x00"),
    encoding=st.sampled_from([b"binary", b"8bit", b"7bit", None]),
    multipart=st.booleans(),
)
def test_h1_rfc3516_4_3_nul_parts_stored_as_base64_and_decoded_back(
    payload: bytes, encoding: bytes | None, multipart: bool
) -> None:
    cte = b"Content-Transfer-Encoding: %b\r\n" % encoding if encoding else b""
    leaf = b"Content-Type: application/octet-stream\r\n" + cte + b"\r\n" + payload
    if multipart:
        message = (
            b'Subject: x\r\nContent-Type: multipart/mixed; boundary="=b="\r\n\r\n'
            b"--=b=\r\nContent-Type: text/plain\r\n\r\nTexte.\r\n--=b=\r\n"
            + leaf
            + b"\r\n--=b=--\r\n"
        )
    else:
        message = b"Subject: x\r\n" + leaf
    stored = seven_bit_parts(message)
    assert b"\x00" not in stored
    root = parse_message(stored).root
    part = find_part(root, [2] if multipart else [1])
    assert part is not None and part.encoding == "base64"
    assert decode_body(stored, part) == payload
    if multipart:
        text = find_part(root, [1])
        assert text is not None and stored[text.body_start : text.end] == b"Texte."


def test_h1_rfc3516_4_3_messages_without_nul_stored_unchanged() -> None:
    assert seven_bit_parts(NESTED) is NESTED
