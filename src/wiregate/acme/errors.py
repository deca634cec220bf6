from wiregate.errors import WiregateError


class AcmeError(WiregateError):
    """An ACME step failed; the message names the domain and the reason."""
