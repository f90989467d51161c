"""weburl against the 0.169.0 reference, plus WHATWG/RFC 3986 facts and properties.

`URL_CASES` and `LOCATION_CASES` were captured from the reference binary (`codex exec-server`),
by sending `http/request` for each URL to a local raw HTTP server on 127.0.0.1:47913 (and on
[::1]:47913 and 127.0.0.1:80):

* URL_CASES, per URL: ("error", text) for `http/request url is invalid: <text>`; ("scheme", s)
  for `only supports http and https URLs, got <s>`; ("request", target, host) for the request
  line and Host header the server received; ("sent", url) for `error sending request for url
  (<url>)` (nothing listening / no such host: the URL as reqwest shows it, without userinfo);
  ("builder", url) for `builder error for url (<url>)` (refused before sending).
* LOCATION_CASES, per `Location` value of a 302 from BASE: ("stay",) the 302 is the answer;
  ("builder",) `builder error for url (BASE)`; ("scheme", s) `redirect target uses unsupported
  URL scheme: <s>`; ("loop",) `too many redirects` (it redirects to BASE again); ("request",
  target, host) the follow-up request received; ("sent", url) / ("target-builder", url) the
  follow-up failed (the URL keeps its userinfo after a redirect).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from execserver.compat.http_uri import MAX_LEN as HTTP_URI_MAX_LEN
from execserver.compat.reqwest import (
    fits_http_uri,
    location_text,
    redirect_fails_builder,
    redirect_target,
)
from execserver.compat.rfc3986 import is_valid_uri_reference
from execserver.compat.url import UrlError, WebUrl, join, parse_url
from execserver.protocol.pathuri import PathUri, PathUriError

PORT = 47913
BASE = f"http://127.0.0.1:{PORT}/redir"

# fmt: off
URL_CASES: list[tuple[str, tuple[str, ...]]] = [
    ('', ('error', 'relative URL without a base')),
    ('  http://127.0.0.1:1/x  ', ('sent', 'http://127.0.0.1:1/x')),
    ('\x00http://127.0.0.1:1/x\x1f', ('sent', 'http://127.0.0.1:1/x')),
    ('ht\ttp://127.0.0.1:1/a\nb\rc', ('sent', 'http://127.0.0.1:1/abc')),
    ('HTTP://127.0.0.1:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http:/127.0.0.1:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http:127.0.0.1:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http:\\\\127.0.0.1:1\\x\\y', ('sent', 'http://127.0.0.1:1/x/y')),
    ('http://u:p@127.0.0.1:1/x#frag', ('sent', 'http://127.0.0.1:1/x#frag')),
    ('http://u@127.0.0.1:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http://@127.0.0.1:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http://:@127.0.0.1:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http://a@b@127.0.0.1:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http://127.0.0.1:80/x', ('request', '/x', '127.0.0.1')),
    ('http://127.0.0.1:0080/x', ('request', '/x', '127.0.0.1')),
    ('https://127.0.0.1:443/x', ('sent', 'https://127.0.0.1/x')),
    ('https://127.0.0.1:80/x', ('sent', 'https://127.0.0.1:80/x')),
    ('http://127.0.0.1:/x', ('request', '/x', '127.0.0.1')),
    ('http://127.0.0.1:65535/x', ('sent', 'http://127.0.0.1:65535/x')),
    ('http://127.0.0.1:65536/x', ('error', 'invalid port number')),
    ('http://127.0.0.1:99999/x', ('error', 'invalid port number')),
    ('http://127.0.0.1:80a/x', ('error', 'invalid port number')),
    ('http://0x7f.1:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http://2130706433:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http://017700000001:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http://127.1:1/x', ('sent', 'http://127.0.0.1:1/x')),
    ('http://300.1.1.1/x', ('error', 'invalid IPv4 address')),
    ('http://1.2.3.09/x', ('error', 'invalid IPv4 address')),
    ('http://foo.09/x', ('error', 'invalid IPv4 address')),
    ('http://foo.0x/x', ('error', 'invalid IPv4 address')),
    ('http://[::1]:1/x', ('sent', 'http://[::1]:1/x')),
    ('http://[::1/x', ('error', 'invalid IPv6 address')),
    ('http://[::1]x/x', ('error', 'invalid IPv6 address')),
    ('http://[0:0:0:0:0:0:0:1]:1/x', ('sent', 'http://[::1]:1/x')),
    ('http://a b/x', ('error', 'invalid international domain name')),
    ('http://EXAMPLE.invalid:1/x', ('sent', 'http://example.invalid:1/x')),
    ('http://ex%41mple.invalid:1/x', ('sent', 'http://example.invalid:1/x')),
    ('http://ex%zzample.invalid:1/x', ('error', 'invalid international domain name')),
    ('http://exämple.invalid:1/x', ('sent', 'http://xn--exmple-cua.invalid:1/x')),
    ('http://xn--exmple-cua.invalid:1/x', ('sent', 'http://xn--exmple-cua.invalid:1/x')),
    ('http://xn--zz.invalid:1/x', ('error', 'invalid international domain name')),
    ('http://a..b.invalid:1/x', ('sent', 'http://a..b.invalid:1/x')),
    ('http://%2e:1/x', ('sent', 'http://.:1/x')),
    ('http://127.0.0.1:1/a/./b/../../c/%2e/%2E%2e/d', ('sent', 'http://127.0.0.1:1/d')),
    ('http://127.0.0.1:1/a?b c#d e', ('sent', 'http://127.0.0.1:1/a?b%20c#d%20e')),
    ('http://127.0.0.1:1/a%zz?%zz#%zz', ('sent', 'http://127.0.0.1:1/a%zz?%zz#%zz')),
    (
        'http://127.0.0.1:1/{}|^`"<>\'?{}|^`"<>\'#{}|^`"<>\'',
        ('sent', "http://127.0.0.1:1/%7B%7D|^%60%22%3C%3E'?{}|^`%22%3C%3E%27#{}|^%60%22%3C%3E'"),
    ),
    ('http://127.0.0.1:1/é?é#é', ('sent', 'http://127.0.0.1:1/%C3%A9?%C3%A9#%C3%A9')),
    ('http://127.0.0.1:1?x', ('sent', 'http://127.0.0.1:1/?x')),
    ('http://127.0.0.1:1#x', ('sent', 'http://127.0.0.1:1/#x')),
    ('http://127.0.0.1:1/x?', ('sent', 'http://127.0.0.1:1/x?')),
    ('http://127.0.0.1:1/x#', ('sent', 'http://127.0.0.1:1/x#')),
    ('http://u%20:p%zz@127.0.0.1:1/', ('sent', 'http://127.0.0.1:1/')),
    ('http://u:p@/x', ('error', 'empty host')),
    ('http://u@/x', ('error', 'empty host')),
    ('http://@/x', ('error', 'empty host')),
    ('http://:1/x', ('error', 'empty host')),
    ('http://', ('error', 'empty host')),
    ('http:///x', ('sent', 'http://x/')),
    ('http:', ('error', 'empty host')),
    ('http:/', ('error', 'empty host')),
    ('http://?x', ('error', 'empty host')),
    ('http://#x', ('error', 'empty host')),
    ('https://', ('error', 'empty host')),
    ('://x', ('error', 'relative URL without a base')),
    ('/x', ('error', 'relative URL without a base')),
    ('not a url', ('error', 'relative URL without a base')),
    ('1http://x', ('error', 'relative URL without a base')),
    ('h_t://x', ('error', 'relative URL without a base')),
    ('ftp://x', ('scheme', 'ftp')),
    ('FTP://x', ('scheme', 'ftp')),
    ('foo:bar', ('scheme', 'foo')),
    ('foo://[::1', ('error', 'invalid IPv6 address')),
    ('foo://a b/', ('error', 'invalid domain character')),
    ('foo://a:99999/', ('error', 'invalid port number')),
    ('foo://', ('scheme', 'foo')),
    ('javascript:alert(1)', ('scheme', 'javascript')),
    ('file:///etc/passwd', ('scheme', 'file')),
    ('ws://127.0.0.1:1/', ('scheme', 'ws')),
    (
        'http://127.0.0.1:47913/{}|^`"<>\'?{}|^`"<>\'#{}|^`"<>\'',
        ('request', "/%7B%7D|^%60%22%3C%3E'?{}|^`%22%3C%3E%27", '127.0.0.1:47913'),
    ),
    ('http://127.0.0.1:47913/a%zz?%zz#%zz', ('request', '/a%zz?%zz', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/a[b]c?[d]@:/', ('request', '/a[b]c?[d]@:/', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/\\x\\..\\y', ('request', '//y', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/%2e%2E/%2e', ('request', '/', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/a/..', ('request', '/', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/a/.', ('request', '/a/', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/a/%2e%2e/', ('request', '/', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/..', ('request', '/', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/a//b//', ('request', '/a//b//', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/x?a\\b', ('request', '/x?a\\b', '127.0.0.1:47913')),
    ('http://u:p@127.0.0.1:47913/auth', ('request', '/auth', '127.0.0.1:47913')),
    ('http://u@127.0.0.1:47913/auth', ('request', '/auth', '127.0.0.1:47913')),
    ('http://:p@127.0.0.1:47913/auth', ('request', '/auth', '127.0.0.1:47913')),
    ('http://%75%zz:p%3a@127.0.0.1:47913/auth', ('request', '/auth', '127.0.0.1:47913')),
    ('http://0x7f.0.0.1:47913/h', ('request', '/h', '127.0.0.1:47913')),
    ('http://127.0.0.1.:47913/h', ('request', '/h', '127.0.0.1:47913')),
    ('http://localhost:47913/h', ('request', '/h', 'localhost:47913')),
    ('http://LOCALHOST.:47913/h', ('sent', 'http://localhost.:47913/h')),
    ('http://[::1]:47913/h', ('request', '/h', '[::1]:47913')),
    ('http://127.0.0.1:47913/~!$&()*+,;=:@', ('request', '/~!$&()*+,;=:@', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/%00%7f?%01', ('request', '/%00%7f?%01', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/\x7f?\x7f#\x7f', ('request', '/%7F?%7F', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/\xa0 x', ('request', '/%C2%A0%20x', '127.0.0.1:47913')),
    ('http://[0::1]:47913/h?x#y', ('request', '/h?x', '[::1]:47913')),
    ('http://127.0.0.1:80/h', ('request', '/h', '127.0.0.1')),
    ('http://127.0.0.1:080/h', ('request', '/h', '127.0.0.1')),
    ('http://127.0.0.1/h', ('request', '/h', '127.0.0.1')),
    ('http://u:p@127.0.0.1/h', ('request', '/h', '127.0.0.1')),
    ('http:/é@EX.invalid.:47913+%00#', ('error', 'invalid port number')),
    ('http:\\/u:p@EX.invalid.:47913%00', ('error', 'invalid port number')),
    ('hTtP://%31%32%37.0.0.1: 47913@#', ('error', 'empty host')),
    ('foo:ex.invalid`%00+<=>', ('scheme', 'foo')),
    ('https:u:p:q@a b?`', ('error', 'invalid international domain name')),
    ("foo://[@ex.invalid:99999<\x01':", ('error', 'invalid port number')),
    ('foo://u:p:q@[::127.0.0.1]`+c:[:\x01', ('error', 'invalid IPv6 address')),
    (' hTtP://é@300.1.1.1:?]&|&\\\x00 ', ('error', 'invalid IPv4 address')),
    ('http:///u p@[::1', ('error', 'invalid IPv6 address')),
    ('foo::@EX.invalid.:{/|/?%zz=<\\', ('scheme', 'foo')),
    ('%:047913"a', ('error', 'relative URL without a base')),
    ('ftp://@[v1.x]:65536!%2e~`=', ('error', 'invalid IPv6 address')),
    ('http:///u:p@foo.09:]/;$', ('error', 'invalid IPv4 address')),
    ("https:[v1.x]: 47913\n'", ('error', 'invalid IPv6 address')),
    ('a@b@127.0.0.1:65536#`/', ('error', 'relative URL without a base')),
    ('foo:é@é.invalid:47913c|[', ('scheme', 'foo')),
    ('ws://@0x7f.1a|~%zz', ('error', 'invalid international domain name')),
    ('foo://@[v1.x]', ('error', 'invalid IPv6 address')),
    ('http:/a@b@ＥＸ.invalid:47913', ('sent', 'http://ex.invalid:47913/')),
    (' http:\\/u:p@%31%32%37.0.0.1# `}/\x00 ', ('request', '/', '127.0.0.1')),
    ('foo::@[0:0::1]:47913^@`', ('scheme', 'foo')),
    ('foo:@127.0.0.1:99999 ?é\\%zz\t', ('scheme', 'foo')),
    ('hTtP://u p@0177.0.0.1:80:]', ('error', 'invalid port number')),
    ("http:\\\\ＥＸ.invalid:47913?é<\\%41=#' é{>", ('sent', "http://ex.invalid:47913/?%C3%A9%3C\\%41=#'%20%C3%A9{%3E")),
    ('ftp://u%zz@[::1%2E%2e]a}', ('error', 'invalid IPv6 address')),
    ('http::@%31%32%37.0.0.1:47913', ('request', '/', '127.0.0.1:47913')),
    ('ws://u:p@[::127.0.0.1]:47913/\x7f\x01>\\`?éé\\=', ('scheme', 'ws')),
    (' http:[@127.0.0.1:47913?\x00 ', ('request', '/?', '127.0.0.1:47913')),
    ('foo.09:80[c:[?/^%41', ('scheme', 'foo.09')),
    ('http://@0x7f.1:47913/<.\x01?[?', ('request', '/%3C.%01?[?', '127.0.0.1:47913')),
    ('foo://u p@127.0.0.1:65536\\"\x7f', ('error', 'invalid port number')),
    ('http:///a@b@127.0.0.1:47913:?&\\>\\#', ('error', 'invalid port number')),
    ("http://u:p:q@EX.invalid.:#\x7fé^\x7f'", ('sent', "http://ex.invalid./#%7F%C3%A9^%7F'")),
    ('foo:u%zz@0x7f.1:65536/%00b{<?', ('scheme', 'foo')),
    ('http:///a_b.invalid%2E%2e/', ('sent', 'http://a_b.invalid../')),
    ('http:\\\\é@ex.invalid', ('sent', 'http://ex.invalid/')),
    ('http:/EX.invalid.\\![\x01?', ('sent', 'http://ex.invalid./![%01?')),
    ('http:/a@b@a%2fb:99999"+', ('error', 'invalid international domain name')),
    ('HTTP:@foo.09:47913c:;\x01', ('error', 'invalid IPv4 address')),
    ('http:\\/[v1.x]:99999c:?]\té[%41', ('error', 'invalid IPv6 address')),
    ('http:\\\\u p@LocalHost:47913~[%zz:', ('error', 'invalid port number')),
    ('http:///é@%:65536`é|/?< %41', ('error', 'invalid international domain name')),
    ('ws://[@[::1]:99999%00+é\n$', ('error', 'invalid port number')),
    ('http:\\/::@127.1:99999/\n%zz{..é', ('error', 'invalid port number')),
    (' http:\\\\localhost:65536/}c:/[?\x00 ', ('error', 'invalid port number')),
]


LOCATION_CASES: list[tuple[str, tuple[str, ...]]] = [
    ('/echo', ('request', '/echo', '127.0.0.1:47913')),
    ('/e cho', ('request', '/e%20cho', '127.0.0.1:47913')),
    ('/e%20cho', ('request', '/e%20cho', '127.0.0.1:47913')),
    ('echo', ('request', '/echo', '127.0.0.1:47913')),
    ('./echo', ('request', '/echo', '127.0.0.1:47913')),
    ('../../echo', ('request', '/echo', '127.0.0.1:47913')),
    ('?q=1', ('request', '/redir?q=1', '127.0.0.1:47913')),
    ('#frag', ('loop',)),
    ('/x#frag', ('request', '/x', '127.0.0.1:47913')),
    ('//127.0.0.1:47913/proto', ('request', '/proto', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913/abs', ('request', '/abs', '127.0.0.1:47913')),
    ('HTTP://127.0.0.1:47913/abs', ('request', '/abs', '127.0.0.1:47913')),
    ('http://', ('stay',)),
    ('http:///x', ('sent', 'http://x/')),
    ('http:x', ('request', '/x', '127.0.0.1:47913')),
    ('http:/x', ('request', '/x', '127.0.0.1:47913')),
    ('//', ('stay',)),
    ('///x', ('stay',)),
    ('http://[::1', ('stay',)),
    ('http://[::1]:47913/v6', ('request', '/v6', '[::1]:47913')),
    ('/é', ('stay',)),
    ('/%zz', ('request', '/%zz', '127.0.0.1:47913')),
    ('/a%2', ('request', '/a%2', '127.0.0.1:47913')),
    ('/a{b}', ('request', '/a%7Bb%7D', '127.0.0.1:47913')),
    ('/a|b', ('request', '/a|b', '127.0.0.1:47913')),
    ('/a^b', ('request', '/a^b', '127.0.0.1:47913')),
    ('/a`b', ('request', '/a%60b', '127.0.0.1:47913')),
    ('/a"b', ('request', '/a%22b', '127.0.0.1:47913')),
    ('/a<b', ('request', '/a%3Cb', '127.0.0.1:47913')),
    ('/a[b]', ('request', '/a[b]', '127.0.0.1:47913')),
    ('/a\\b', ('request', '/a/b', '127.0.0.1:47913')),
    ('?a[b]', ('request', '/redir?a[b]', '127.0.0.1:47913')),
    ('?a{b}', ('request', '/redir?a{b}', '127.0.0.1:47913')),
    ('#a#b', ('loop',)),
    ('#a b', ('loop',)),
    ('x:y', ('scheme', 'x')),
    ('ftp:x', ('scheme', 'ftp')),
    ('ftp://x/y', ('scheme', 'ftp')),
    ('foo:bar', ('scheme', 'foo')),
    ('mailto:a@b', ('scheme', 'mailto')),
    ('file:///etc/passwd', ('scheme', 'file')),
    ('https://127.0.0.1:1/', ('sent', 'https://127.0.0.1:1/')),
    ('', ('loop',)),
    (' /echo', ('request', '/echo', '127.0.0.1:47913')),
    ('/echo ', ('request', '/echo', '127.0.0.1:47913')),
    ('/a\tb', ('request', '/ab', '127.0.0.1:47913')),
    ('http://u:p@127.0.0.1:47913/auth', ('request', '/auth', '127.0.0.1:47913')),
    ('http://127.0.0.1:47913:80/x', ('stay',)),
    ('http://127.0.0.1:99999/x', ('builder',)),
    ('http://a b/x', ('stay',)),
    ('http://300.1.1.1/', ('builder',)),
    ('http://ex%41mple.invalid/', ('sent', 'http://example.invalid/')),
    ('http://EXAMPLE.invalid/', ('sent', 'http://example.invalid/')),
    ('http://xn--zz.invalid/', ('builder',)),
    ('1abc:x', ('request', '/1abc:x', '127.0.0.1:47913')),
    ('+x:y', ('request', '/+x:y', '127.0.0.1:47913')),
    ('a+b:y', ('scheme', 'a+b')),
    ('a_b:y', ('request', '/a_b:y', '127.0.0.1:47913')),
    ('%2e%2e/x', ('request', '/x', '127.0.0.1:47913')),
    ('/./a/../b', ('request', '/b', '127.0.0.1:47913')),
    ('//127.0.0.1:99999', ('builder',)),
    ('//300.1.1.1/', ('builder',)),
    ('http://127.0.0.1:123456789012/', ('builder',)),
    ('http://300.1.1.1/%zz', ('stay',)),
    ('http://300.1.1.1/{', ('stay',)),
    ('http://u@300.1.1.1/', ('builder',)),
    ('http://u:p@300.1.1.1/', ('builder',)),
    ('http://@300.1.1.1/', ('builder',)),
    ('http://300.1.1.1/#f', ('builder',)),
    ('http://300.1.1.1/[', ('stay',)),
    ('http://[v1.x]/', ('builder',)),
    ('http://[::1%25eth0]/', ('stay',)),
    ('http://300.1.1.1', ('builder',)),
    ('HTTP://300.1.1.1/', ('builder',)),
    ('foo://300.1.1.1/', ('scheme', 'foo')),
    ('https://300.1.1.1/', ('builder',)),
    ('ws://300.1.1.1/', ('builder',)),
    ('//[::1]:99999/', ('builder',)),
    ('http://300.1.1.1:/', ('builder',)),
    ('http://300.1.1.1/?q=[]', ('stay',)),
    ('http://300.1.1.1/#a#b', ('stay',)),
    ('http://300.1.1.1/a b', ('stay',)),
    ('http://300.1.1.1/é', ('stay',)),
    ('http://300.1.1.1/?a=b', ('builder',)),
    ('http://a%zz/', ('stay',)),
    ('http://a%/', ('stay',)),
    ('http://%7e/', ('sent', 'http://~/')),
    ('http://a_b.invalid:99999/', ('builder',)),
    ('http://a~b.invalid:99999/', ('builder',)),
    ('http://a!b.invalid:99999/', ('builder',)),
    ('http://a*b.invalid:99999/', ('builder',)),
    ("http://a'b.invalid:99999/", ('builder',)),
    ('http://a(b.invalid:99999/', ('builder',)),
    ('http://a;b.invalid:99999/', ('builder',)),
    ('http://a=b.invalid:99999/', ('builder',)),
    ('http://a+b.invalid:99999/', ('builder',)),
    ('http://a$b.invalid:99999/', ('builder',)),
    ('http://a,b.invalid:99999/', ('builder',)),
    ('http://a&b.invalid:99999/', ('builder',)),
    ('http://[::1]:99999/', ('builder',)),
    ('http://[::1]z:99999/', ('stay',)),
    ('http://[v7.abc]:99999/', ('builder',)),
    ('http://[1.2.3.4]:99999/', ('stay',)),
    ('http://[::1.2.3.4]:99999/', ('builder',)),
    ('http://[::1.2.3]:99999/', ('stay',)),
    ('http://[::ffff:300.1.1.1]:99999/', ('stay',)),
    ('http://[:::1]:99999/', ('stay',)),
    ('http://[1::2::3]:99999/', ('stay',)),
    ('http://h:99999/?x#%zz', ('stay',)),
    ('http://h:99999/#{', ('stay',)),
    ('x:99999', ('scheme', 'x')),
    ('http:', ('builder',)),
    ('http://h:99999/\t', ('builder',)),
    ('ftp://h:99999/', ('builder',)),
    ('sc+1.-x://h:99999/', ('builder',)),
    ('/\\127.0.0.1:47913/s1', ('request', '/s1', '127.0.0.1:47913')),
    ('\\\\127.0.0.1:47913/s2', ('request', '/s2', '127.0.0.1:47913')),
    ('\\/127.0.0.1:47913/s3', ('request', '/s3', '127.0.0.1:47913')),
    ('//\\127.0.0.1:47913/s4', ('stay',)),
    ('///127.0.0.1:47913/s5', ('stay',)),
    ('\\\\\\127.0.0.1:47913/s6', ('request', '/s6', '127.0.0.1:47913')),
    ('http:\\\\127.0.0.1:47913/s7', ('request', '/s7', '127.0.0.1:47913')),
    ('http:/\\127.0.0.1:47913/s8', ('request', '/s8', '127.0.0.1:47913')),
    ('http:\\/127.0.0.1:47913/s9', ('request', '/s9', '127.0.0.1:47913')),
    ('http:/127.0.0.1:47913/s10', ('request', '/127.0.0.1:47913/s10', '127.0.0.1:47913')),
    ('http:////127.0.0.1:47913/s11', ('request', '/s11', '127.0.0.1:47913')),
    ('http:\\127.0.0.1:47913/s12', ('request', '/127.0.0.1:47913/s12', '127.0.0.1:47913')),
    ('//127.0.0.1:47913\\s13', ('request', '/s13', '127.0.0.1:47913')),
    ('//u:p@127.0.0.1:47913/s14', ('request', '/s14', '127.0.0.1:47913')),
    ('//@127.0.0.1:47913/s15', ('request', '/s15', '127.0.0.1:47913')),
    ('HTTP:s16', ('request', '/s16', '127.0.0.1:47913')),
    ('http:?q17', ('request', '/redir?q17', '127.0.0.1:47913')),
    ('http:#f18', ('loop',)),
    ('https:/127.0.0.1:1/x', ('sent', 'https://127.0.0.1:1/x')),
    ('https:127.0.0.1:1/x', ('sent', 'https://127.0.0.1:1/x')),
    ('https:', ('builder',)),
    ('http:300.1.1.1', ('builder',)),
    ('http:99999', ('request', '/99999', '127.0.0.1:47913')),
    ('//127.0.0.1:47913?q19', ('request', '/?q19', '127.0.0.1:47913')),
    ('//127.0.0.1:47913#f20', ('request', '/', '127.0.0.1:47913')),
    ('//127.0.0.1:47913/s21/../s22/./', ('request', '/s22/', '127.0.0.1:47913')),
    ('s23/..', ('request', '/', '127.0.0.1:47913')),
    ('.', ('request', '/', '127.0.0.1:47913')),
    ('..', ('request', '/', '127.0.0.1:47913')),
    ('./', ('request', '/', '127.0.0.1:47913')),
    ('s24;x=1', ('request', '/s24;x=1', '127.0.0.1:47913')),
    ('?', ('request', '/redir?', '127.0.0.1:47913')),
    ('http://%41:99999/', ('stay',)),
    ('http://u%41@300.1.1.1/', ('builder',)),
    ('http://a:b:c:d:e:f:g:h:i@300.1.1.1/', ('builder',)),
    ('http://a:b:c:d:e:f:g:h@300.1.1.1/', ('builder',)),
    ('http://a:b:c:d:e:f:g@300.1.1.1/', ('builder',)),
    ('http://u@:99999/', ('builder',)),
    ('http:u@h:99999', ('builder',)),
    ('http:u@h:1', ('request', '/u@h:1', '127.0.0.1:47913')),
    ('http:./300.1.1.1', ('builder',)),
    ('http:300.1.1.1/..', ('request', '/', '127.0.0.1:47913')),
    ('http:a/../300.1.1.1', ('request', '/300.1.1.1', '127.0.0.1:47913')),
    ("a" * 63 + "://300.1.1.1/", ("scheme", "a" * 63)),
    ("a" * 64 + "://300.1.1.1/", ("scheme", "a" * 64)),
    ("a" * 65 + "://300.1.1.1/", ("scheme", "a" * 65)),
    ('//300.1.1.1:1/../x', ('builder',)),
    ('http://[::1]:47913/c:/..', ('request', '/c:/', '[::1]:47913')),
    ('/c:/..', ('request', '/c:/', '127.0.0.1:47913')),
    ('/c:/../x', ('request', '/c:/x', '127.0.0.1:47913')),
    ('/a/c:/..', ('request', '/a/c:/', '127.0.0.1:47913')),
    ('/c|/..', ('request', '/c|/', '127.0.0.1:47913')),
    ('/C:x/..', ('request', '/', '127.0.0.1:47913')),
    ('/c:/a/../..', ('request', '/c:/', '127.0.0.1:47913')),
    ('/c:', ('request', '/c:', '127.0.0.1:47913')),
    ('/c:/', ('request', '/c:/', '127.0.0.1:47913')),
    ('/c:/../../x', ('request', '/c:/x', '127.0.0.1:47913')),
    ('./c:/../..', ('request', '/c:/', '127.0.0.1:47913')),
    ('http://a{b.invalid/x', ('target-builder', 'http://a{b.invalid/x')),
    ('http://a`b.invalid/x', ('target-builder', 'http://a`b.invalid/x')),
    ('http://a"b.invalid/x', ('target-builder', 'http://a"b.invalid/x')),
    ('http://a}b.invalid/x', ('target-builder', 'http://a}b.invalid/x')),
    ("http://a'b.invalid:1/x", ('sent', "http://a'b.invalid:1/x")),
    ('ftp:%2E%2e', ('builder',)),
    ('http:%2e/300.1.1.1', ('builder',)),
    ('http:/%2E%2E/300.1.1.1', ('request', '/300.1.1.1', '127.0.0.1:47913')),
    ('ftp:.', ('builder',)),
    ('ftp:%2e%2E/x', ('scheme', 'ftp')),
    ('https:./%2e', ('builder',)),
    ('http:a/%2e%2e/300.1.1.1', ('request', '/300.1.1.1', '127.0.0.1:47913')),
    ('http://300.1.1.1/%2e%2e', ('builder',)),
    ('x:%2e%2e', ('scheme', 'x')),
    ('ws:..', ('builder',)),
    ('\\\\>%00b...?{=>é', ('stay',)),
    ('../%2e}é/}`?{/', ('stay',)),
    ('hTtP://u:p:q@a b+]<~{c|?&%zz', ('stay',)),
    ('/\\|~ ;', ('stay',)),
    ('#}/?/`é', ('stay',)),
    ('\\/ ?/', ('stay',)),
    ("..$[!?'=", ('request', '/..$[!?%27=', '127.0.0.1:47913')),
    ('/\\b;', ('sent', 'http://b;/')),
    ('HTTP:u:p@a%2fb:47913^a}', ('request', '/u:p@a%2fb:47913^a%7D', '127.0.0.1:47913')),
    ('/?{%41#\\', ('request', '/?{%41', '127.0.0.1:47913')),
    ('HTTP:127.0.0.1c:+b+/', ('request', '/127.0.0.1c:+b+/', '127.0.0.1:47913')),
    ('/', ('request', '/', '127.0.0.1:47913')),
    ('foo://u@1.2.3.08:47913\t#[>/', ('scheme', 'foo')),
    ('hTtP://u@1.2.3.08:47913?>é', ('stay',)),
    ("///[?%41'", ('stay',)),
    ('http://[@[::1:80`', ('stay',)),
    ('/// />a`#', ('stay',)),
    ("foo:a@b@a..b.invalid:99999é/é#'^", ('stay',)),
    ('ws://@x%41.invalid:47913\\ c:+', ('scheme', 'ws')),
    ("http:\\/u:p:q@foo.09:1a??']%zz`", ('stay',)),
    ('.....:<é', ('stay',)),
    ('x:>%2e..%2E%2e"~', ('scheme', 'x')),
    ('http:\\/[v1.x]:47913|%00=%2E%2e!?', ('stay',)),
    ("\\/:/#'%zz", ('stay',)),
    ('1a:+%00@..@?|>', ('request', '/1a:+%00@..@?|%3E', '127.0.0.1:47913')),
    ('foo:é@xn--zz:99999}', ('stay',)),
    ('https:@127.1:65536c|?<%41', ('stay',)),
    ('HTTP:: 47913]', ('request', '/:%2047913]', '127.0.0.1:47913')),
    ("/@.'", ('request', "/@.'", '127.0.0.1:47913')),
    ('ftp://a@b@x%41.invalid:99999>[^\t#%zz', ('stay',)),
    ('https:"></?', ('stay',)),
    ('foo://u:p:q@a b:65536|.}%00%zz%00', ('stay',)),
    ("http:\\\\foo.09:47913%2e?&'", ('stay',)),
    ('foo://u:p@a%2fb: 47913c|b;a.', ('stay',)),
    ('ftp://foo.09:99999é', ('stay',)),
    ('../}', ('request', '/%7D', '127.0.0.1:47913')),
    ('.c:<?', ('request', '/.c:%3C?', '127.0.0.1:47913')),
    ('http:\\\\u p@[::1]%2E%2e', ('stay',)),
    ('c:/<]c|@$??|{', ('scheme', 'c')),
    ('http:///é@a..b.invalidé}$$|%00', ('stay',)),
    ('http:/u:p:q@é.invalid/+[@%00', ('stay',)),
    ('foo://', ('scheme', 'foo')),
    ('http:/LocalHost: 47913', ('request', '/LocalHost:%2047913', '127.0.0.1:47913')),
    ('http://u:p@127.0.0.1:1/x', ('sent', 'http://u:p@127.0.0.1:1/x')),
    ('http://u:p@a{b/', ('target-builder', 'http://u:p@a{b/')),
]
# fmt: on


def _ids(rows: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    return [repr(text)[:80] for text, _ in rows]


# --- captured from the reference ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), URL_CASES, ids=_ids(URL_CASES))
def test_url_matches_reference(text: str, expected: tuple[str, ...]) -> None:
    kind = expected[0]
    if kind == "error":
        with pytest.raises(UrlError) as info:
            parse_url(text)
        assert str(info.value) == expected[1]
        return
    url = parse_url(text)
    if kind == "scheme":
        assert url.scheme == expected[1]
        assert url.scheme not in ("http", "https")
        return
    assert url.scheme in ("http", "https")
    if kind == "request":
        assert fits_http_uri(url)
        assert (url.target(), url.authority()) == expected[1:]
    elif kind == "sent":
        assert fits_http_uri(url)
        assert url.serialize(userinfo=False) == expected[1]
    else:
        assert kind == "builder"
        assert not fits_http_uri(url)
        assert url.serialize(userinfo=False) == expected[1]


@pytest.mark.parametrize(("location", "expected"), LOCATION_CASES, ids=_ids(LOCATION_CASES))
def test_redirect_matches_reference(location: str, expected: tuple[str, ...]) -> None:
    current = parse_url(BASE)
    raw = location.encode()
    kind = expected[0]
    builder = redirect_fails_builder(current, raw)
    assert builder == (kind == "builder")
    if builder:
        return
    target = redirect_target(current, raw)
    if kind == "stay":
        assert target is None
        return
    assert target is not None
    # What `redirect_target` returns is `join` of the text.
    assert target == join(current, location.strip(" \t"))
    if kind == "scheme":
        assert target.scheme == expected[1]
        assert target.scheme not in ("http", "https")
        return
    assert target.scheme in ("http", "https")
    if kind == "loop":
        assert target.serialize(fragment=False) == BASE
    elif kind == "request":
        assert fits_http_uri(target)
        assert (target.target(), target.authority()) == expected[1:]
    elif kind == "sent":
        assert fits_http_uri(target)
        assert target.serialize() == expected[1]
    else:
        assert kind == "target-builder"
        assert not fits_http_uri(target)
        assert target.serialize() == expected[1]


def test_http_uri_length_limit_matches_reference() -> None:
    # 65534 characters are sent, 65535 are a builder error; the fragment counts.
    base = f"http://127.0.0.1:{PORT}/"
    for total, fragment in ((65534, 0), (65535, 0), (65534, 10), (65535, 10)):
        tail = "#" + "f" * fragment if fragment else ""
        url = parse_url(base + "a" * (total - len(base) - len(tail)) + tail)
        assert len(url.serialize()) == total
        assert fits_http_uri(url) == (total <= HTTP_URI_MAX_LEN)
    assert not fits_http_uri(parse_url(base + "é" * 30000))


def test_builder_error_shows_current_url_without_userinfo() -> None:
    # Captured: `http://u:p@127.0.0.1:P/redir?q#frag` answering `Location: //300.1.1.1/`
    # fails with `builder error for url (http://127.0.0.1:P/redir?q#frag)`.
    current = parse_url(f"http://u:p@127.0.0.1:{PORT}/redir?q#frag")
    assert redirect_fails_builder(current, b"//300.1.1.1/")
    assert current.serialize(userinfo=False) == f"http://127.0.0.1:{PORT}/redir?q#frag"


def test_referer_form() -> None:
    # Captured: the hop after `http://127.0.0.1:P/sub/r0?x=1#frag` carries
    # `referer: http://127.0.0.1:P/sub/r0?x=1`.
    url = parse_url(f"http://u:p@127.0.0.1:{PORT}/sub/r0?x=1#frag")
    assert url.serialize(fragment=False, userinfo=False) == f"http://127.0.0.1:{PORT}/sub/r0?x=1"


# --- the WHATWG URL Standard (shapes the reference cannot show) ----------------------------------

SPEC_PARSE = [
    ("foo:bar", "foo:bar"),
    ("FOO:Bar Baz?q r#f g", "foo:Bar Baz?q%20r#f%20g"),
    ("foo:\x01\x7f", "foo:%01%7F"),
    ("foo://h/p?q#f", "foo://h/p?q#f"),
    ("foo://H:0/a/../b", "foo://H:0/b"),
    ("foo://", "foo://"),
    ("foo:///x", "foo:///x"),
    ("foo:/.//x", "foo:/.//x"),
    ("foo:/a/..//x", "foo:/.//x"),
    ("foo://h/a\\b", "foo://h/a\\b"),
    ("foo://u:@h", "foo://u@h"),
    ("foo://:@/x", "foo:///x"),
    ("foo://a b", None),
    ("foo://h:1\\x", "foo://h:1/\\x"),
    ("foo://[::1]:1", "foo://[::1]:1"),
    ("foo://%41\x01x", "foo://%41%01x"),
    ("foo://a\x00b", None),
    ("foo://é/", "foo://%C3%A9/"),
    ("ws://h:80/", "ws://h/"),
    ("wss://h:443/", "wss://h/"),
    ("ftp://h:21/", "ftp://h/"),
    ("http://h?a'b", "http://h/?a%27b"),
    ("foo://h?a'b", "foo://h?a'b"),
    ("http://::1@h", "http://:%3A1@h/"),
    ("http://a@b@h", "http://a%40b@h/"),
    ("http://u v:w@h", "http://u%20v:w@h/"),
    ("file:///a/../b", "file:///b"),
    ("file://localhost/x", "file:///x"),
    ("file:c:/x", "file:///c:/x"),
    ("file:?q#f", "file:///?q#f"),
    ("mailto:a@b", "mailto:a@b"),
    ("data:,x y", "data:,x y"),
]


@pytest.mark.parametrize(("text", "expected"), SPEC_PARSE, ids=[repr(t) for t, _ in SPEC_PARSE])
def test_parse_by_the_standard(text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(UrlError):
            parse_url(text)
    else:
        assert parse_url(text).serialize() == expected


SPEC_JOIN = [
    ("http://h/a/b?q#f", "", "http://h/a/b?q"),
    ("http://h/a/b?q#f", "#g", "http://h/a/b?q#g"),
    ("http://h/a/b?q#f", "?r", "http://h/a/b?r"),
    ("http://h/a/b", "ftp:x", "ftp://x/"),
    ("http://h/a/b", "https:x", "https://x/"),
    ("http://h/a/b", "foo:bar", "foo:bar"),
    ("http://u:p@h:81/a/b", "/c", "http://u:p@h:81/c"),
    ("http://u:p@h:81/a/b", "//g", "http://g/"),
    ("http://h/a/b", "\\\\g\\x", "http://g/x"),
    ("http://h/a/b/", "../../../../c", "http://h/c"),
    ("foo://h/a/b", "c", "foo://h/a/c"),
    ("foo://h/a/b", "//g/x", "foo://g/x"),
    ("foo://h/a/b", "/x", "foo://h/x"),
    ("foo://h/a/b", "\\x", "foo://h/a/\\x"),
    ("foo://h", "x", "foo://h/x"),
    ("foo:/a/b", "c", "foo:/a/c"),
    ("foo:opaque", "#f", "foo:opaque#f"),
    ("file:///a/b", "c", "file:///a/c"),
    ("file:///a/b", "../../c", "file:///c"),
    ("file:///a/b?q", "?r", "file:///a/b?r"),
    ("file:///a/b?q", "", "file:///a/b?q"),
    ("file:///C:/a", "/x", "file:///C:/x"),
    ("file:///C:/a", "..", "file:///C:/"),
    ("file:///C:/a", "d|/x", "file:///d:/x"),
    ("file:///C:/a", "d:/x", "d:/x"),
    ("file://h/a", "c|/x", "file:///c:/x"),
    ("file://h/a", "/x", "file://h/x"),
    ("file://h/a", "b", "file://h/b"),
    ("file:///a", "file:b", "file:///b"),
    ("http://h/a", "file:b", "file:///b"),
]


@pytest.mark.parametrize(
    ("base", "reference", "expected"), SPEC_JOIN, ids=[f"{b} + {r!r}" for b, r, _ in SPEC_JOIN]
)
def test_join_by_the_standard(base: str, reference: str, expected: str) -> None:
    assert join(parse_url(base), reference).serialize() == expected


def test_join_errors() -> None:
    with pytest.raises(UrlError, match=r"^relative URL with a cannot-be-a-base base$"):
        join(parse_url("foo:opaque"), "x")
    with pytest.raises(UrlError, match=r"^empty host$"):
        join(parse_url("http://h/"), "///x")
    with pytest.raises(UrlError, match=r"^relative URL without a base$"):
        parse_url("//h/")


def test_components() -> None:
    url = parse_url("HTTPS://us%65r:pa ss@[0::1]:8443/a b/../c?d e#f g")
    assert url == WebUrl("https", "us%65r", "pa%20ss", "[::1]", 8443, "/c", "d%20e", "f%20g")
    assert url.target() == "/c?d%20e"
    assert url.authority() == "[::1]:8443"
    assert url.origin() == ("https", "[::1]", 8443)
    assert str(url) == "https://us%65r:pa%20ss@[::1]:8443/c?d%20e#f%20g"
    assert url.serialize(userinfo=False, fragment=False) == "https://[::1]:8443/c?d%20e"
    bare = parse_url("http://h?")
    assert (bare.path, bare.query, bare.target(), bare.authority()) == ("/", "", "/?", "h")
    assert parse_url("http://h").origin() == ("http", "h", 80)
    assert parse_url("https://h").origin() == ("https", "h", 443)
    assert parse_url("ws://h:81").origin() == ("ws", "h", 81)
    assert parse_url("foo://h").origin() == ("foo", "h", 0)
    assert parse_url("foo://h").target() == "/"
    opaque = parse_url("mailto:x")
    assert opaque.cannot_be_a_base
    assert not opaque.has_authority
    assert parse_url("foo:/x").has_authority is False
    assert not parse_url("foo:/x").cannot_be_a_base


# --- Location values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/x", "/x"),
        (b"  /x \t", "/x"),
        (b"/e cho", "/e cho"),
        (b"/a\tb", "/a\tb"),
        (b"", ""),
        ("/é".encode(), None),
        (b"/\xe9", None),
        (b"/\x7f", None),
        (b"/\x01", None),
    ],
)
def test_location_text(raw: bytes, expected: str | None) -> None:
    assert location_text(raw) == expected


VALID_REFERENCES = [
    "",
    "/",
    "//",
    "///x",
    "http://",
    "http:///x",
    "http:",
    "x:99999",
    "a+b.c-d:",
    "?",
    "#",
    "?a/b?c",
    "#a/b?c",
    "%41",
    "a%2Fb",
    "//h:99999",
    "//h:",
    "//u:p:q@h",
    "//[::1]",
    "//[::]",
    "//[1:2:3:4:5:6:7:8]",
    "//[::1.2.3.4]",
    "//[1::2:3.4.5.6]",
    "//[v1.x]",
    "//[V1F.a:b]",
    "//300.1.1.1",
    "mailto:a@b",
    "a/b:c",
    "./a:b",
    "!$&'()*+,;=",
    "~-._",
]
INVALID_REFERENCES = [
    "/e cho",
    "/é",
    "%zz",
    "%4",
    "%",
    "1a:b",
    ":",
    "a:b c",
    "/a[b]",
    "?a[b]",
    "#a#b",
    "/a\\b",
    "/{",
    "/|",
    "/^",
    "/`",
    '/"',
    "/<",
    "http://[::1",
    "http://[::1]x",
    "http://[1.2.3.4]/",
    "http://[::1.2.3]/",
    "http://[1::2::3]/",
    "http://[::ffff:300.1.1.1]/",
    "http://[:::1]/",
    "http://[1:2:3:4:5:6:7:8:9]/",
    "http://[1.2.3.4::]/",
    "http://[::1%25eth0]/",
    "//h:1a",
    "//h:1:2",
    "//a@b@c",
    "//a b",
    "/a\tb",
    "\x00",
]


@pytest.mark.parametrize("text", VALID_REFERENCES)
def test_valid_uri_references(text: str) -> None:
    assert is_valid_uri_reference(text)
    assert _RFC3986_REFERENCE.fullmatch(text)


@pytest.mark.parametrize("text", INVALID_REFERENCES)
def test_invalid_uri_references(text: str) -> None:
    assert not is_valid_uri_reference(text)
    assert not _RFC3986_REFERENCE.fullmatch(text)


# --- properties ----------------------------------------------------------------------------------

# RFC 3986 appendix A transcribed as a regular expression: an independent oracle.
_UNRESERVED = r"[A-Za-z0-9\-._~]"
_PCT = r"%[0-9A-Fa-f]{2}"
_SUB = r"[!$&'()*+,;=]"
_PCHAR = rf"(?:{_UNRESERVED}|{_PCT}|{_SUB}|[:@])"
_SEGMENT = rf"{_PCHAR}*"
_SEGMENT_NZ = rf"{_PCHAR}+"
_SEGMENT_NZ_NC = rf"(?:{_UNRESERVED}|{_PCT}|{_SUB}|@)+"
_QUERY = rf"(?:{_PCHAR}|[/?])*"
_DEC = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_DEC}\.{_DEC}\.{_DEC}\.{_DEC}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = "|".join(
    [
        rf"(?:{_H16}:){{6}}{_LS32}",
        rf"::(?:{_H16}:){{5}}{_LS32}",
        rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
        rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
        rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
    ]
)
_IPVFUTURE = rf"[vV][0-9A-Fa-f]+\.(?:{_UNRESERVED}|{_SUB}|:)+"
_HOST = rf"(?:\[(?:{_IPV6}|{_IPVFUTURE})\]|(?:{_UNRESERVED}|{_PCT}|{_SUB})*)"
_AUTHORITY = rf"(?:(?:{_UNRESERVED}|{_PCT}|{_SUB}|:)*@)?{_HOST}(?::[0-9]*)?"
_ABEMPTY = rf"(?:/{_SEGMENT})*"
_ABSOLUTE = rf"/(?:{_SEGMENT_NZ}(?:/{_SEGMENT})*)?"
_HIER = rf"(?://{_AUTHORITY}{_ABEMPTY}|{_ABSOLUTE}|{_SEGMENT_NZ}(?:/{_SEGMENT})*|)"
_RELATIVE = rf"(?://{_AUTHORITY}{_ABEMPTY}|{_ABSOLUTE}|{_SEGMENT_NZ_NC}(?:/{_SEGMENT})*|)"
_TAIL = rf"(?:\?{_QUERY})?(?:#{_QUERY})?"
_RFC3986_REFERENCE = re.compile(rf"(?:[A-Za-z][A-Za-z0-9+\-.]*:{_HIER}{_TAIL}|{_RELATIVE}{_TAIL})")

_PIECES = [
    "http:",
    "HTTPS:",
    "ftp:",
    "foo:",
    "file:",
    "ws:",
    "x+y:",
    "//",
    "/",
    "\\",
    "?",
    "#",
    "@",
    ":",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    "%",
    "%41",
    "%zz",
    "[",
    "]",
    "[::1]",
    "[v1.x]",
    "[::1.2.3.4]",
    "127.0.0.1",
    "0x7f.1",
    "300",
    "h",
    "xn--",
    "c:",
    "c|",
    "80",
    "99999",
    " ",
    "\t",
    "\n",
    "é",
    "'",
    '"',
    "<",
    ">",
    "`",
    "{",
    "}",
    "|",
    "^",
    "~",
    "!",
    "$",
    "&",
    "=",
    ";",
    ",",
    "*",
    "+",
    "\x00",
    "\x7f",
    "\u00ad",
    "Ｈ",
]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=14).map("".join)
_URL_TEXT = st.tuples(
    st.sampled_from(
        ["http://", "https://", "http:", "foo://", "foo:", "file://", "file:", "ws://"]
    ),
    _TEXT,
).map("".join)


def _parse_or_none(text: str) -> WebUrl | None:
    try:
        return parse_url(text)
    except UrlError:
        return None


@settings(max_examples=1500, deadline=None)
@given(_URL_TEXT)
def test_serialization_is_a_fixed_point(text: str) -> None:
    # Not a fixed point in the url crate either: a tab or newline right after a first file
    # path segment "X:" splits it ("file://./c:<TAB>x" -> "file://./c:/x"), and the drive
    # letter then drops the host on the next parse (found by this test; kept as the crate does).
    assume(not (text.startswith("file:") and any(c in text for c in "\t\n\r")))
    url = _parse_or_none(text)
    if url is None:
        return
    serialized = url.serialize()
    again = parse_url(serialized)
    assert again == url
    assert again.serialize() == serialized
    assert serialized.isascii()
    assert "#" not in url.target()


@settings(max_examples=800, deadline=None)
@given(_URL_TEXT, _URL_TEXT)
def test_join_with_an_absolute_url_returns_it(base_text: str, text: str) -> None:
    base = _parse_or_none(base_text)
    url = _parse_or_none(text)
    if base is None or url is None:
        return
    assert join(base, url.serialize()) == url


@settings(max_examples=800, deadline=None)
@given(_URL_TEXT, _TEXT)
def test_join_is_parse_for_references_with_a_fresh_authority(base_text: str, rest: str) -> None:
    base = _parse_or_none(base_text)
    if base is None or base.cannot_be_a_base:
        return
    for reference in (f"{base.scheme}://{rest}", f"//{rest}"):
        if base.scheme == "file" or "\t" in rest or "\n" in rest:
            continue
        expected = _parse_or_none(f"{base.scheme}://{rest}")
        try:
            joined: WebUrl | None = join(base, reference)
        except UrlError:
            joined = None
        if reference.startswith("//") and base.special and rest[:1] in ("/", "\\"):
            continue  # the crate's "///x" rule (see test_join_errors)
        assert joined == expected


@settings(max_examples=1500, deadline=None)
@given(_TEXT)
def test_uri_reference_check_agrees_with_rfc3986_grammar(text: str) -> None:
    assert is_valid_uri_reference(text) == bool(_RFC3986_REFERENCE.fullmatch(text))


@settings(max_examples=800, deadline=None)
@given(_TEXT)
def test_only_references_with_a_scheme_or_authority_fail_the_builder(text: str) -> None:
    current = parse_url(BASE)
    if not text.isascii() or redirect_fails_builder(current, text.encode()) is False:
        return
    text = text.strip(" \t")
    assert text.startswith("//") or re.match(r"[A-Za-z][A-Za-z0-9+\-.]*:", text)


@settings(max_examples=1500, deadline=None)
@given(_URL_TEXT)
def test_agrees_with_pathuri(text: str) -> None:
    """pathuri validates non-file URLs with its own authority check and parses file URLs with
    the shared parser: errors must agree, and file URLs serialize alike."""
    url = _parse_or_none(text)
    try:
        path_uri: PathUri | None = PathUri.parse(text)
        message = ""
    except PathUriError as exc:
        path_uri = None
        message = exc.message
    if url is None:
        with pytest.raises(UrlError) as info:
            parse_url(text)
        assert message == f"invalid URI: {info.value}"
    elif url.scheme != "file":
        assert message == f"unsupported path URI scheme `{url.scheme}`"
    elif path_uri is not None and path_uri.kind != "drive":
        assert path_uri.uri == url.serialize()
