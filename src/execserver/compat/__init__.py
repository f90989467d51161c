"""Emulations of Rust crates whose exact behaviour and error texts the wire needs: url (WHATWG),
http::Uri, serde / serde_json wording. Pure; imports nothing of ours above it.

One module per crate: `rust` (std formatting), `serde` (error wording and the explainer),
`json_syntax` (serde_json's syntax errors), `idna`, `whatwg` (the url crate's shared machinery:
hosts and ``file:`` URLs), `url` (``Url::parse`` / ``Url::join``), `http_uri` (``http::Uri``),
`rfc3986` (iri-string's strict references) and `reqwest` (what reqwest and codex make of URLs).
"""
