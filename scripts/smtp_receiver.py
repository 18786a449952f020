#!/usr/bin/env python3
"""A real SMTP server for the email notifier's tests (aiosmtpd, from PyPI).

    smtp_receiver.py PORT OUT CERT KEY USER PASSWORD

Listens on 127.0.0.1:PORT, offers STARTTLS with CERT/KEY, requires it, and requires AUTH
(PLAIN or LOGIN) as USER/PASSWORD after it. Each accepted mail is appended to OUT as one JSON
line: {"from", "to", "data", "tls", "user"}.
"""
import json
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out, cert, key, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
lock = threading.Lock()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": session.ssl is not None,
            "user": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
        }
        with lock, open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                        authenticator=authenticator, auth_required=True, auth_require_tls=True)
controller.start()
print(f"smtp receiver on 127.0.0.1:{port}", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
controller.stop()
