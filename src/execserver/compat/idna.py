"""The ``idna`` crate as the url crate calls it for the host of a special URL: UTS #46 ToASCII,
nontransitional, with CheckBidi and CheckJoiners, without CheckHyphens, STD3 rules or DNS length
limits, and the WHATWG forbidden domain code points refused.

The UTS #46 mapping (its table, and NFC) is the `idna` package's ``uts46_remap``; the label
rules that follow it (punycode, bidi, joiners) are here. Pure: stdlib and `idna`.

Known differences, all at the edge of Unicode versions: the reference's table is about Unicode
17, so code points assigned later, which a newer `idna` package maps, pass here and not there;
and the bidi and joiner rules read the stdlib's character properties (Unicode 14 on Python 3.11),
so right-to-left letters or viramas newer than that escape those rules.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from idna import IDNAError, uts46_remap

__all__ = ["FORBIDDEN_DOMAIN", "IdnaError", "domain_to_ascii"]


class IdnaError(ValueError):
    """A host the idna crate refuses (the url crate reports ``invalid international domain
    name``)."""


# WHATWG's forbidden domain code points (the idna crate's `AsciiDenyList::URL`).
FORBIDDEN_DOMAIN: Final = frozenset(chr(c) for c in range(0x21)) | frozenset("#%/:<>?@[\\]^|\x7f")
_JOINERS: Final = frozenset("\u200c\u200d")
_RTL: Final = frozenset({"R", "AL", "AN"})
# `uts46_remap` refuses longer input; the mapping is per code point, so longer text is mapped in
# pieces and normalized once more as a whole.
_REMAP_CHUNK: Final = 1000


def domain_to_ascii(domain: str) -> str:
    """The ASCII form of a (percent-decoded) host, as the url crate computes it.

    Raises:
        IdnaError: the idna crate refuses the host.
    """
    if domain.isascii():
        lowered = domain.lower()
        if any(c in FORBIDDEN_DOMAIN for c in lowered):
            raise IdnaError(domain)
        unicode_labels = [
            _check_punycode_label(label) if label.startswith("xn--") else label
            for label in lowered.split(".")
        ]
        if any(not label.isascii() for label in unicode_labels):
            _check_bidi(unicode_labels)
        return lowered
    labels = _map(domain).split(".")
    unicode_labels = []
    out = []
    for label in labels:
        if label.startswith("xn--"):
            unicode_labels.append(_check_punycode_label(label))
            out.append(label)
        elif label.isascii():
            unicode_labels.append(label)
            out.append(label)
        else:
            _check_unicode_label(label)
            unicode_labels.append(label)
            out.append("xn--" + label.encode("punycode").decode("ascii"))
    _check_bidi(unicode_labels)
    return ".".join(out)


def _remap(text: str) -> str:
    """UTS #46 mapping (nontransitional, STD3 rules off) followed by NFC."""
    try:
        if len(text) <= _REMAP_CHUNK:
            return uts46_remap(text, std3_rules=False)
        pieces = [
            uts46_remap(text[start : start + _REMAP_CHUNK], std3_rules=False)
            for start in range(0, len(text), _REMAP_CHUNK)
        ]
    except IDNAError:  # a disallowed code point (InvalidCodepoint)
        raise IdnaError(text) from None
    return unicodedata.normalize("NFC", "".join(pieces))


def _map(text: str) -> str:
    mapped = _remap(text)
    # A mapping may produce ASCII the URL deny list refuses (U+FF03 FULLWIDTH NUMBER SIGN).
    if any(c in FORBIDDEN_DOMAIN for c in mapped):
        raise IdnaError(text)
    return mapped


def _check_bidi_label(label: str) -> None:
    """RFC 5893's bidi rule for one label of a domain that has right-to-left characters."""
    classes = [unicodedata.bidirectional(c) for c in label]
    first = classes[0]
    if first not in ("L", "R", "AL"):
        raise IdnaError(label)
    trailing = list(classes)
    while len(trailing) > 1 and trailing[-1] == "NSM":
        trailing.pop()
    if first == "L":
        allowed = {"L", "EN", "ES", "CS", "ET", "ON", "BN", "NSM"}
        if any(c not in allowed for c in classes) or trailing[-1] not in ("L", "EN"):
            raise IdnaError(label)
        return
    allowed = {"R", "AL", "AN", "EN", "ES", "CS", "ET", "ON", "BN", "NSM"}
    if any(c not in allowed for c in classes) or trailing[-1] not in ("R", "AL", "EN", "AN"):
        raise IdnaError(label)
    if "EN" in classes and "AN" in classes:
        raise IdnaError(label)


def _check_bidi(labels: list[str]) -> None:
    if any(unicodedata.bidirectional(c) in _RTL for label in labels for c in label):
        for label in labels:
            if label:
                _check_bidi_label(label)


def _check_unicode_label(label: str) -> None:
    if not unicodedata.is_normalized("NFC", label):
        raise IdnaError(label)
    if unicodedata.category(label[0]).startswith("M"):
        raise IdnaError(label)
    for index, c in enumerate(label):
        # Joiners are only valid right after a virama (combining class 9).
        if c in _JOINERS and (index == 0 or unicodedata.combining(label[index - 1]) != 9):
            raise IdnaError(label)


def _check_punycode_label(label: str) -> str:
    """The Unicode form of an ``xn--`` label, which must be a valid, already mapped label."""
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError, IndexError, OverflowError):
        raise IdnaError(label) from None
    if not decoded or decoded.isascii() or _map(decoded) != decoded:
        raise IdnaError(label)
    _check_unicode_label(decoded)
    return decoded
