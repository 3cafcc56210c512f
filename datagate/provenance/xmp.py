"""XMP packets read as RDF/XML with a namespace-aware parser defused against entity expansion.

Properties are looked up by namespace URI, never by prefix, so every form RDF allows reads
the same: a property as an attribute of ``rdf:Description`` (either quote style) or as a
child element, its value as text, as ``rdf:resource``, or as the items of an ``rdf:Alt``,
``rdf:Bag`` or ``rdf:Seq``; any prefix may be bound to the namespace. Structures
(``rdf:parseType="Resource"``, nested descriptions) are not descended into.

A packet that is not well-formed XML, or that declares entities (a "billion laughs" packet),
is unreadable: :attr:`Xmp.error` says why and no property is read from it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
XMP = "http://ns.adobe.com/xap/1.0/"
DCTERMS = "http://purl.org/dc/terms/"
DC = "http://purl.org/dc/elements/1.1/"
TIFF = "http://ns.adobe.com/tiff/1.0/"
PLUS = "http://ns.useplus.org/ldf/xmp/1.0/"
#: Packets larger than this are not parsed (recorded as unreadable).
MAX_XMP = 1 << 20

_CONTAINERS = {f"{{{RDF}}}{name}" for name in ("Alt", "Bag", "Seq")}


@dataclass(frozen=True)
class Xmp:
    """The top-level properties of an XMP packet: (namespace URI, local name) -> values."""

    props: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    error: str | None = None

    def values(self, namespace: str, name: str) -> tuple[str, ...]:
        return self.props.get((namespace, name), ())

    def get(self, namespace: str, name: str) -> str | None:
        found = self.values(namespace, name)
        return found[0] if found else None


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


def _values(element: Element) -> list[str]:
    resource = element.get(f"{{{RDF}}}resource")
    if resource is not None:
        return [resource.strip()]
    found: list[str] = []
    for child in element:
        if child.tag in _CONTAINERS:
            for item in child:
                if item.tag != f"{{{RDF}}}li":
                    continue
                value = item.get(f"{{{RDF}}}resource")
                value = value if value is not None else (item.text or "")
                if value.strip():
                    found.append(value.strip())
    if found or len(element):
        return found  # a container's items, or a structure (not read)
    text = (element.text or "").strip()
    return [text] if text else []


def _parse(text: str) -> Element:
    try:
        root: Element = DET.fromstring(text)
        return root
    except ParseError:
        # packets may carry padding or junk around the XML: retry on the markup alone
        start, end = text.find("<"), text.rfind(">")
        if start < 0 or end <= start or (start == 0 and end == len(text) - 1):
            raise
        trimmed: Element = DET.fromstring(text[start : end + 1])
        return trimmed


@functools.lru_cache(maxsize=8)
def parse(text: str) -> Xmp:
    """Read an XMP packet's top-level properties; never raises."""
    if len(text) > MAX_XMP:
        return Xmp(error=f"XMP packet of {len(text):,} characters not parsed")
    try:
        root = _parse(text.strip("\x00 \t\r\n\ufeff"))
    except DefusedXmlException as exc:
        return Xmp(error=f"XMP unreadable: {type(exc).__name__} (entity declarations refused)")
    except (ParseError, ValueError) as exc:
        return Xmp(error=f"XMP unreadable: {type(exc).__name__}: {exc}"[:300])
    props: dict[tuple[str, str], list[str]] = {}
    descriptions = [root] if root.tag == f"{{{RDF}}}Description" else []
    for rdf in [root] if root.tag == f"{{{RDF}}}RDF" else root.iter(f"{{{RDF}}}RDF"):
        descriptions.extend(d for d in rdf if d.tag == f"{{{RDF}}}Description")
    for description in descriptions:
        for name, value in description.attrib.items():
            key = _split(name)
            if key[0] in ("", RDF, "http://www.w3.org/XML/1998/namespace"):
                continue
            props.setdefault(key, []).append(value.strip())
        for child in description:
            props.setdefault(_split(child.tag), []).extend(_values(child))
    return Xmp({k: tuple(v) for k, v in props.items() if v})
