"""A real HAProxy and a header-catching listener: see wiregate.demo.haproxy (`wiregate proxy-demo` runs them too)."""

from wiregate.demo.haproxy import HAPROXY_PREAMBLE as HAPROXY_PREAMBLE
from wiregate.demo.haproxy import Catcher as Catcher
from wiregate.demo.haproxy import Caught as Caught
from wiregate.demo.haproxy import HAProxy as HAProxy
from wiregate.demo.haproxy import HAProxyMissing as HAProxyMissing
from wiregate.demo.haproxy import TestPKI as TestPKI
from wiregate.demo.haproxy import find_haproxy as find_haproxy
from wiregate.demo.haproxy import haproxy_version as haproxy_version
from wiregate.demo.haproxy import http_get as http_get
from wiregate.demo.haproxy import is_listening as is_listening
from wiregate.demo.haproxy import make_test_pki as make_test_pki
from wiregate.demo.haproxy import tls_client as tls_client
from wiregate.demo.haproxy import wait_listening as wait_listening
