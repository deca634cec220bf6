"""Helpers shared by the test suite, the benchmarks and the demo: real peer programs, namespaces, processes.

Rules they enforce: processes are ended by PID (never by name); namespaces and links are named ``wgt...`` and
removed on exit even when the body fails; traffic goes to loopback or to addresses inside our namespaces.
"""
