"""HTTP-01 in the ingress's sans-I/O decision: answered before routing, also on a listener with only a default
route (which otherwise routes without reading), and never on a server_first listener."""

from wiregate.acme.book import Book
from wiregate.ingress.config import Listener, Route
from wiregate.ingress.policy import ACME_HTTP01, Accepted, HeadPhase, Refused, Rules
from wiregate.proxyproto import encode_v2

GW, CLIENT = ("192.0.2.1", 40000), ("203.0.113.7", 50000)
REQ = b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: web.example\r\n\r\n"


def _phase(book: Book, **kw) -> HeadPhase:
    lst = Listener("http", ("192.0.2.2", 80), trusted=("192.0.2.1",), default_route="web",
                   routes=(Route("web", ("127.0.0.1", 8080)),), **kw)
    return HeadPhase(Rules.from_listener(lst, book.http01, book.http01_pending), GW, ("192.0.2.2", 80), 0.0)


def test_pending_token_is_answered_on_a_default_route_listener():
    book = Book()
    book.add_http01("tok", "tok.thumb")
    ev = _phase(book).receive_data(encode_v2(CLIENT, ("198.51.100.1", 80)) + REQ, 0.0)
    assert isinstance(ev, Refused) and ev.reason == ACME_HTTP01
    assert ev.reply.startswith(b"HTTP/1.1 200 OK\r\n") and ev.reply.endswith(b"\r\n\r\ntok.thumb")


def test_without_pending_tokens_a_default_route_listener_does_not_wait_for_bytes():
    ev = _phase(Book()).receive_data(encode_v2(CLIENT, ("198.51.100.1", 80)), 0.0)
    assert isinstance(ev, Accepted) and ev.kind == "unsniffed" and ev.client == CLIENT


def test_server_first_listener_never_waits_even_while_a_token_is_pending():
    book = Book()
    book.add_http01("tok", "tok.thumb")
    ev = _phase(book, server_first=True).receive_data(encode_v2(CLIENT, ("198.51.100.1", 80)), 0.0)
    assert isinstance(ev, Accepted) and ev.kind == "unsniffed"


def test_other_paths_route_normally_while_a_token_is_pending():
    book = Book()
    book.add_http01("tok", "tok.thumb")
    ev = _phase(book).receive_data(encode_v2(CLIENT, ("198.51.100.1", 80)) +
                                   b"GET / HTTP/1.1\r\nHost: web.example\r\n\r\n", 0.0)
    assert isinstance(ev, Accepted) and ev.kind == "http" and ev.route.name == "web"
