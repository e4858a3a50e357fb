"""The one way records code parses XML: hardened against hostile documents (spec E6).

Mailed XML (CDA, XDS metadata) comes from outside the trust boundary. Entity expansion
("billion laughs") and external entities (XXE: local files, network) are the classic ways
to turn a parser against its host, so:

- any document type declaration is refused outright (``FORBIDDEN_DTD``): health documents
  never need one, and without a DTD there are no entities to expand or fetch. A cheap byte
  scan refuses before parsing; a check after parsing catches encodings the scan missed;
- the libxml2 parser itself is configured not to resolve entities, not to load DTDs, not to
  touch the network, and to keep its default size limits (no ``huge_tree``);
- the input size is bounded before anything is parsed.

Errors come back as a :class:`~caducee.records.model.Problem`, never as an exception.
"""

from __future__ import annotations

from lxml import etree

from caducee.records.model import DEFAULT_LIMITS, Problem, ProblemCode

_UTF8_BOM = b"\xef\xbb\xbf"
_DOCTYPE_MARKERS = tuple(
    "<!DOCTYPE".encode(codec)
    for codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
)
_WHITESPACE = b" \t\r\n"


def _hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=False,
    )


def _forbidden_dtd(where: str | None) -> Problem:
    return Problem(ProblemCode.FORBIDDEN_DTD, "XML with a document type declaration", where)


def _trim_prolog(data: bytes) -> bytes:
    """Drop a UTF-8 BOM and whitespace before the first ``<`` (seen in mailed files)."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    stripped = data.lstrip(_WHITESPACE)
    return stripped if stripped.startswith(b"<") else data


def _syntax_problem(error: etree.XMLSyntaxError, where: str | None) -> Problem:
    text = str(error)
    line = error.position[0] if error.position else 0
    if "amplification" in text:
        return _forbidden_dtd(where)
    if "Resource limit" in text or "too long" in text or "Excessive depth" in text:
        return Problem(ProblemCode.TOO_LARGE, f"XML exceeds a parser limit (line {line})", where)
    return Problem(ProblemCode.NOT_WELL_FORMED, f"XML is not well-formed (line {line})", where)


def parse_xml(
    data: bytes, *, max_bytes: int = DEFAULT_LIMITS.max_xml_bytes, where: str | None = None
) -> etree._Element | Problem:
    """Parse untrusted XML bytes; return the root element, or the problem that stopped it."""
    if len(data) > max_bytes:
        return Problem(ProblemCode.TOO_LARGE, f"XML larger than {max_bytes} bytes", where)
    if any(marker in data for marker in _DOCTYPE_MARKERS):
        return _forbidden_dtd(where)
    data = _trim_prolog(data)
    if not data.strip():
        return Problem(ProblemCode.NOT_WELL_FORMED, "XML is empty", where)
    try:
        root = etree.fromstring(data, _hardened_parser())
    except etree.XMLSyntaxError as error:
        return _syntax_problem(error, where)
    except (etree.LxmlError, ValueError):
        return Problem(ProblemCode.NOT_WELL_FORMED, "XML could not be parsed", where)
    docinfo = root.getroottree().docinfo
    declared_doctype: object = getattr(docinfo, "doctype", "")  # missing from lxml-stubs
    if docinfo.internalDTD is not None or declared_doctype:
        return _forbidden_dtd(where)
    return root


def local_name(element: etree._Element) -> str:
    """The tag without its namespace; empty for comments and processing instructions."""
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def namespace_of(element: etree._Element) -> str:
    """The namespace URI of an element's tag, or an empty string."""
    tag = element.tag
    if isinstance(tag, str) and tag.startswith("{"):
        return tag[1:].split("}", 1)[0]
    return ""


def all_text(element: etree._Element) -> str:
    """The text of an element and its descendants, comments and PIs left out."""
    return "".join(
        piece if isinstance(piece, str) else piece.decode("utf-8", "replace")
        for piece in element.itertext()
    )
