"""Sample home services: see wiregate.demo.samples (`wiregate demo` runs them). `python -m wiregate.testing.samples`
still starts them, with the same options."""

from wiregate.demo.samples import HEADER_TIMEOUT as HEADER_TIMEOUT
from wiregate.demo.samples import MAX_HEAD as MAX_HEAD
from wiregate.demo.samples import Samples as Samples
from wiregate.demo.samples import UdpEcho as UdpEcho
from wiregate.demo.samples import echo_back as echo_back
from wiregate.demo.samples import main as main
from wiregate.demo.samples import make_cert as make_cert
from wiregate.demo.samples import read_datagram_proxy as read_datagram_proxy
from wiregate.demo.samples import read_proxy as read_proxy
from wiregate.demo.samples import serve as serve

if __name__ == "__main__":
    main()
