"""Protocol constants, named as in the WireGuard whitepaper (section 6) and wireguard-go device/constants.go."""

from __future__ import annotations

# Noise and WireGuard labels (whitepaper 5.4)
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

# Message types and sizes (whitepaper 5.4.2-5.4.7)
MESSAGE_INITIATION = 1
MESSAGE_RESPONSE = 2
MESSAGE_COOKIE_REPLY = 3
MESSAGE_TRANSPORT = 4
MESSAGE_INITIATION_SIZE = 148
MESSAGE_RESPONSE_SIZE = 92
MESSAGE_COOKIE_REPLY_SIZE = 64
MESSAGE_TRANSPORT_HEADER_SIZE = 16
MESSAGE_KEEPALIVE_SIZE = 32  # header + Poly1305 tag, empty payload
TAG_SIZE = 16
KEY_SIZE = 32

# Timers and limits (whitepaper 6.1; wireguard-go constants.go)
REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
REKEY_TIMEOUT_JITTER_MAX_MS = 334
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18
KEEPALIVE_TIMEOUT = 10.0
COOKIE_REFRESH_TIME = 120.0
HANDSHAKE_INITIATION_RATE = 1.0 / 50  # 20 ms between initiations accepted from one peer
PADDING_MULTIPLE = 16

# Implementation choices (wireguard-go device.go / ratelimiter.go, and ours where stated)
UNDER_LOAD_AFTER_TIME = 1.0  # stay "under load" this long after load was seen
UNDER_LOAD_HANDSHAKES = 64  # ours: handshake messages per second that mean "under load" (no queue to measure)
RATELIMIT_PACKETS_PER_SECOND = 20  # handshakes per source IP while under load
RATELIMIT_BURST = 5
HANDSHAKE_QUEUE_SIZE = 1024  # wireguard-go QueueHandshakeSize: handshakes beyond it are dropped; 1/8 full = load
# Ours: budgets for the handshake work a flood can put on the event loop the data path shares (ratelimit.py).
# Measured on the 2-core test machine: a cookie reply costs ~38 us from datagram to reply, processing an
# initiation and answering it ~280 us (four X25519 operations and the hashing around them).
HANDSHAKES_PER_BATCH = 16  # handshake messages processed per receive/timer call (~4.5 ms), the rest queued
HANDSHAKES_PER_SECOND = 1000  # overall (at most ~30% of one core); queued beyond it
HANDSHAKE_BURST = 64
COOKIE_REPLIES_PER_SECOND = 2000  # overall (~8% of one core); initiations beyond it get no answer
COOKIE_REPLY_BURST = 256  # ~10 ms of replies at once: a storm of restarting sites gets its cookies
COOKIE_REPLIES_PER_SOURCE = 20  # per source IPv4 address or IPv6 /64, per second
COOKIE_REPLY_SOURCE_BURST = 5
MAX_STAGED_PACKETS = 1024  # packets queued per peer while no session exists (oldest dropped)
RESOLVE_EVERY_ATTEMPTS = 3  # ours: ask the I/O layer to re-resolve a DNS endpoint after every 3 failed tries
DEFAULT_MTU = 1420
