"""The data path shared by the gateway relay and the home ingress (below both in the layers; imports neither).

- `poller`: readiness of connection sockets through one private epoll set (`Poller`), itself watched by the loop.
- `halves`: one direction of a connection (`Half`): `SpliceHalf` (splice(2) through a pooled pipe), `BufferedHalf`
  (recv_into/send; a `RemainderHalf`, as the ingress's `CopyHalf` is), back-pressure, half-close and reset rules;
  `PipePool`.
- `waits`: awaitable recv/send/connect on the same Poller, for the few steps that run in a task (TLS termination,
  a target named by a host name): they never hand a connection socket to the event loop.
- `loop`: the one place the event loop is chosen (`run`).

See docs/architecture.md ("Data path") and docs/relay.md, docs/ingress.md.
"""
