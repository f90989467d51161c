"""compat/idna: host names through the `idna` package's UTS #46 table and the idna crate's rules.

`REFERENCE_HOSTS` were captured from codex exec-server 0.169.0: `http/request` for
``http://a<character>.invalid:1/`` answers ``error sending request for url (<URL>)`` (the host it
computed) or ``invalid international domain name``. The characters were assigned after Unicode
14, the stdlib's database on Python 3.11, which the hand-kept tables this replaced were built on
(they refused them all).
"""

from __future__ import annotations

import pytest

from execserver.compat.idna import IdnaError, domain_to_ascii

REFERENCE_HOSTS: list[tuple[str, str | None]] = [
    ("a\u1c89", "xn--a-hzl"),  # CYRILLIC CAPITAL LETTER TJE (Unicode 16), mapped
    ("a\ua7cb", "xn--a-y1a"),  # LATIN CAPITAL LETTER RAMS HORN (Unicode 16), mapped
    ("a\U00031350", "xn--a-8324a"),  # CJK Extension H (Unicode 15)
    ("a\U0002ebf0", "xn--a-8n62a"),  # CJK Extension I (Unicode 15.1)
    ("a\U00011f00", "xn--a-e03j"),  # Kawi (Unicode 15)
    ("a\U0001e4d0", "xn--a-3o6r"),  # Nag Mundari (Unicode 15)
    ("a\U000105c0", "xn--a-0g3i"),  # Todhri (Unicode 16)
    ("a\U0001e030", "xn--a-8sb"),  # MODIFIER LETTER CYRILLIC SMALL A (Unicode 15), mapped
    ("a\U0001fa77", "xn--a-uq5s"),  # an emoji of Unicode 15
]


@pytest.mark.parametrize(("host", "expected"), REFERENCE_HOSTS, ids=[h for h, _ in REFERENCE_HOSTS])
def test_idna_newer_characters_match_reference(host: str, expected: str | None) -> None:
    """Characters newer than the stdlib's Unicode database map as the reference maps them."""
    assert domain_to_ascii(f"{host}.invalid") == f"{expected}.invalid"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("EXAMPLE.com", "example.com"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("faß.de", "xn--fa-hia.de"),  # nontransitional: ß is kept
        ("\u1e9e", "xn--zca"),  # capital sharp s maps to ß
        ("\u03c2", "xn--3xa"),
        ("Ⅻ", "xii"),
        ("ﬃ", "ffi"),
        ("a\u3002b\uff0ec", "a.b.c"),  # label separators
        ("a\u00adb", "ab"),  # ignored
        ("xn--bcher-kva", "xn--bcher-kva"),
        ("a_b*c", "a_b*c"),  # no STD3 rules
    ],
)
def test_idna_maps_like_the_url_crate(host: str, expected: str) -> None:
    """UTS #46 mapping, nontransitional, without STD3 rules (cases from pathuri_cases.json)."""
    assert domain_to_ascii(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "a\u2488b",  # DIGIT ONE FULL STOP: disallowed, not mapped to "1."
        "a\u2024b",  # ONE DOT LEADER
        "a\uff03b",  # FULLWIDTH NUMBER SIGN maps to a forbidden "#"
        "a b",
        "a%b",
        "xn--zz",  # invalid Punycode
        "xn--",
        "xn--a",  # decodes to ASCII
        "\u0663",  # ARABIC-INDIC DIGIT THREE: fails the bidi rule
        "a\u200db",  # ZERO WIDTH JOINER not after a virama
        "\u0301a",  # a label starting with a combining mark
    ],
)
def test_idna_refuses_like_the_url_crate(host: str) -> None:
    """Disallowed code points, forbidden domain code points, bad labels."""
    with pytest.raises(IdnaError):
        domain_to_ascii(host)


def test_idna_maps_long_domains_in_pieces() -> None:
    """`idna.uts46_remap` takes at most 1024 code points; longer domains map piecewise and are
    normalized as a whole (a combining mark right after a piece boundary still composes)."""
    assert domain_to_ascii("bücher." * 300) == "xn--bcher-kva." * 300
    across = "a" * 999 + "e\u0301"
    assert domain_to_ascii(across) == domain_to_ascii("a" * 999 + "\u00e9")
