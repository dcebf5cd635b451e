"""Requests for the front's differential tests against h11: valid, invalid, pipelined,
chunked, with trailers. Every target starts with /echo so the e2e run can read back what
the origin received. `{h}` is replaced by the tunnel's hostname."""

from __future__ import annotations

CORPUS: dict[str, str] = {
    "get": "GET /echo/a HTTP/1.1\r\nHost: {h}\r\n\r\n",
    "get query": "GET /echo/a?x=1&y=%20 HTTP/1.1\r\nHost: {h}\r\nAccept: */*\r\n\r\n",
    "post length": "POST /echo/p HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\n\r\nhello",
    "post chunked": ("POST /echo/c HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    "chunk extension": ("POST /echo/c HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n"
                        "\r\n5;ext=1\r\nhello\r\n0\r\n\r\n"),
    "trailers": ("POST /echo/t HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\n0\r\nAuthorization: Bearer injected\r\nX-T: 1\r\n\r\n"),
    "pipelined post delete": ("POST /echo/m1 HTTP/1.1\r\nHost: {h}\r\nContent-Length: 2\r\n\r\n"
                              "hiDELETE /echo/m2 HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    "pipelined three": ("GET /echo/1 HTTP/1.1\r\nHost: {h}\r\n\r\n"
                        "PUT /echo/2 HTTP/1.1\r\nHost: {h}\r\nContent-Length: 1\r\n\r\nx"
                        "PATCH /echo/3 HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n"
                        "\r\n1\r\ny\r\n0\r\n\r\n"),
    "pipelined 1.1 then 1.0": ("GET /echo/one HTTP/1.1\r\nHost: {h}\r\n\r\n"
                               "GET /echo/two HTTP/1.0\r\nHost: {h}\r\n\r\n"),
    "connection close then more": ("GET /echo/a HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n"
                                   "\r\nGET /echo/b HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    "options": "OPTIONS /echo/o HTTP/1.1\r\nHost: {h}\r\n\r\n",
    "many headers": "GET /echo/m HTTP/1.1\r\nHost: {h}\r\n" + "".join(
        f"X-H{i}: v{i}\r\n" for i in range(50)) + "\r\n",
    "repeated header": "GET /echo/r HTTP/1.1\r\nHost: {h}\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
    "tab in value": "GET /echo/v HTTP/1.1\r\nHost: {h}\r\nX-A: a\tb\r\n\r\n",
    "empty value": "GET /echo/v HTTP/1.1\r\nHost: {h}\r\nX-Empty:\r\n\r\n",
    # invalid: both parsers reject
    "two content lengths": ("POST /echo/x HTTP/1.1\r\nHost: {h}\r\nContent-Length: 1\r\n"
                            "Content-Length: 2\r\n\r\nab"),
    "bad content length": "POST /echo/x HTTP/1.1\r\nHost: {h}\r\nContent-Length: 1x\r\n\r\na",
    "space before colon": "GET /echo/x HTTP/1.1\r\nHost: {h}\r\nX-A : 1\r\n\r\n",
    "no host 1.1": "GET /echo/x HTTP/1.1\r\n\r\n",
    "two hosts": "GET /echo/x HTTP/1.1\r\nHost: {h}\r\nHost: other.localhost\r\n\r\n",
    "bad chunk size": ("POST /echo/x HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "zz\r\nhello\r\n0\r\n\r\n"),
    "te gzip only": ("POST /echo/x HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip\r\n\r\n"
                     "abc"),
    "garbage": "THIS IS NOT HTTP\r\n\r\n",
    "nul in value": "GET /echo/x HTTP/1.1\r\nHost: {h}\r\nX-A: a\x00b\r\n\r\n",
    "good then bad": ("GET /echo/ok HTTP/1.1\r\nHost: {h}\r\n\r\n"
                      "GET /echo/x HTTP/1.1\r\nHost: {h}\r\nBad Name: 1\r\n\r\n"),
}

STRICTER_THAN_H11: dict[str, str] = {
    "bare LF": "GET /echo/x HTTP/1.1\nHost: {h}\n\n",
    "obs-fold": "GET /echo/x HTTP/1.1\r\nHost: {h}\r\nX-A: a\r\n folded\r\n\r\n",
    "no host 1.0": "GET /echo/x HTTP/1.0\r\n\r\n",
    "connect": "CONNECT {h}:443 HTTP/1.1\r\nHost: {h}\r\n\r\n",
    "te and cl": ("POST /echo/x HTTP/1.1\r\nHost: {h}\r\nContent-Length: 3\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "bad version": "GET /echo/x HTTP/9.9\r\nHost: {h}\r\n\r\n",
}
"""Accepted by h11, refused by the front on purpose (RFC 9112 allows either; llhttp's
strictness closes request-smuggling gaps: Transfer-Encoding with Content-Length, bare LF,
line folding; an unknown HTTP version is refused; a request without a Host cannot be routed;
CONNECT is not proxied)."""

ABSOLUTE_FORM = "GET http://{h}/echo/abs?q=1 HTTP/1.1\r\nHost: nowhere.localhost\r\n\r\n"
"""h11 keeps the absolute-form target; the front routes by its authority and forwards the
origin-form (RFC 9112 3.2.2). Compared after that documented rewrite."""
