"""What `wiregate demo` and `wiregate proxy-demo` run: product code, imported by no test helper's choice.

- procs: finding (as root, installing) a program, free ports, processes ended by PID
- netns: network namespaces and veth links, always removed (names start with "wgt")
- system: the whole system in three namespaces (client, vps, home), paired as a user would
- samples: the home services that tell the client which address they saw (`python -m wiregate.demo.samples`)
- haproxy: a real HAProxy and a PROXY-header-catching listener, for the round trip of `proxy-demo`

wiregate.testing builds on these (tests and benchmarks import them from there); nothing here imports
wiregate.testing (tests/test_layers.py checks it).
"""
