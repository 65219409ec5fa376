"""CURVE encryption and authentication of tcp links (ZeroMQ's CurveZMQ, RFC 26, with ZAP,
RFC 27), and the certificates they use.

A secured link names certificate files by their base path (``keys/camera`` stands for
``keys/camera.key``, the public certificate, and ``keys/camera.key_secret``, the pair), so each end
reads only what it holds on its own host:

- the sending end (it binds: the CURVE server) reads ``curve_server``'s secret certificate, and
  accepts only the clients whose public certificates lie in the folder ``curve_clients``
  (checked by a ZAP handler, ``zmq.auth.thread.ThreadAuthenticator``; a refused client never
  receives anything, and is logged and counted: ``Guard.refused``);
- the receiving end (it connects: the CURVE client) reads ``curve_server``'s public certificate
  and ``curve_client``'s secret certificate.

``evpipe keys FOLDER NAME...`` writes certificate pairs (``zmq.auth.create_certificates``).
"""

from __future__ import annotations

import errno
import logging
import os
from collections import Counter

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)


class CertificateError(ValueError):
    """A certificate file that cannot be used; the message names it."""


def load_key(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    """(public key, secret key or None) from the certificate ``path`` + ``.key_secret`` (secret)
    or ``.key``; ``CertificateError`` naming the file when it is missing or not a certificate."""
    filename = path + (".key_secret" if secret else ".key")
    try:
        public, private = zmq.auth.load_certificate(filename)
    except (OSError, ValueError) as exc:
        raise CertificateError(f"{filename}: not a readable ZeroMQ certificate ({exc})") from None
    if secret and not private:
        raise CertificateError(f"{filename}: holds no secret key")
    return public, private


def write_keys(folder: str, name: str) -> tuple[str, str]:
    """Write ``folder``/``name``.key and .key_secret (created with mode 0600); their paths.
    ValueError for a name that is not a plain file name; FileExistsError, writing nothing, when
    the pair exists already (a new one would lock out the peers holding the old one)."""
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"certificate name {name!r} must be a plain file name")
    for suffix in (".key", ".key_secret"):
        if os.path.exists(os.path.join(folder, name + suffix)):
            raise FileExistsError(errno.EEXIST, "exists already; remove the pair to make a new one",
                                  os.path.join(folder, name + suffix))
    os.makedirs(folder, exist_ok=True)
    public, secret = zmq.auth.create_certificates(folder, name)
    os.chmod(secret, 0o600)
    return public, secret


def check_link(server: str, client: str, clients: str, sending: bool, receiving: bool) -> None:
    """Raise ``CertificateError`` unless the files each end of a CURVE link reads here exist:
    the sender's pair and its clients folder, the server's public and the client's pair."""
    if sending:
        load_key(server, secret=True)
        if not os.path.isdir(clients):
            raise CertificateError(f"{clients}: no folder of allowed client certificates")
    if receiving:
        load_key(server, secret=False)
        load_key(client, secret=True)


REFUSAL_LOG_EVERY = 100  # a refusal is logged the first time for a reason, then every so many


class _Authenticator(ThreadAuthenticator):
    """ZeroMQ's ZAP handler, counting every client it refuses (its own log says so only at
    debug level) and logging the first refusal for each reason, then one in
    ``REFUSAL_LOG_EVERY`` with the count: a client that keeps reconnecting with a wrong key
    does not flood the log."""

    def __init__(self, ctx: zmq.Context):
        super().__init__(ctx)
        self.refused = 0
        self.by_reason: Counter[str] = Counter()

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                        user_id: str = "anonymous") -> None:
        if status_code != b"200":
            self.refused += 1
            reason = status_text.decode(errors="replace")
            self.by_reason[reason] += 1
            count = self.by_reason[reason]
            if count == 1 or count % REFUSAL_LOG_EVERY == 0:
                log.warning("CURVE: a client was refused (%s); %d refused for this reason so far",
                            reason, count)
        super()._send_zap_reply(request_id, status_code, status_text, user_id)


class Guard:
    """The ZAP handler of one ZeroMQ context, started by the first secured sender; ``refused``
    counts the clients it turned away."""

    def __init__(self, ctx: zmq.Context):
        self.ctx = ctx
        self.authenticator: _Authenticator | None = None

    @property
    def refused(self) -> int:
        return self.authenticator.refused if self.authenticator is not None else 0

    def secure_sender(self, sock: zmq.Socket, server: str, clients: str, domain: str) -> None:
        """Make ``sock`` a CURVE server with ``server``'s pair, taking the clients of folder
        ``clients`` only (ZAP domain ``domain``)."""
        check_link(server, "", clients, sending=True, receiving=False)
        public, secret = load_key(server, secret=True)
        if self.authenticator is None:
            self.authenticator = _Authenticator(self.ctx)
            self.authenticator.start()
        self.authenticator.configure_curve(domain=domain, location=clients)
        sock.zap_domain = domain.encode()
        sock.curve_secretkey, sock.curve_publickey = secret, public
        sock.curve_server = True

    def stop(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


def secure_receiver(sock: zmq.Socket, server: str, client: str) -> None:
    """Make ``sock`` a CURVE client of ``server`` (its public certificate) with ``client``'s
    pair."""
    server_public, _ = load_key(server, secret=False)
    public, secret = load_key(client, secret=True)
    sock.curve_serverkey = server_public
    sock.curve_publickey, sock.curve_secretkey = public, secret
