"""A real IMAP server for tests and the crash harness: Dovecot (Debian package ``dovecot-imapd``), started on
127.0.0.1 with its own configuration, a passwd-file user and a Maildir in a temporary directory, plain,
STARTTLS and implicit TLS with a self-signed certificate made for the run.

Used by ``tests/channels/email/test_email_imap.py`` (the ``dovecot`` fixture) and by the crash harness
(``tests/crashkit``), which SIGKILLs the hub's IMAP poller while mail waits in this mailbox. Free of pytest,
so that ``make crash`` can use it outside a test run.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
USER, PASSWORD = "hub", 'pa"ss w\\ord'  # a quote, a space and a backslash: imaplib must quote them right


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dovecot_missing() -> str | None:
    """Why Dovecot cannot be started here, or None."""
    if DOVECOT is None:
        return "Dovecot is not installed (apt-get install dovecot-imapd)"
    if shutil.which("openssl") is None:
        return "openssl is not installed (needed for a test certificate)"
    return None


@dataclass
class Dovecot:
    """A running Dovecot instance; ``client()`` is an independent, logged-in IMAP connection."""

    root: Path
    proc: subprocess.Popen
    port: int  # plain IMAP, STARTTLS offered
    tls_port: int  # implicit TLS (imaps)

    def client(self) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        c.login(USER, PASSWORD)
        c.select("INBOX")
        return c

    def append(self, raw: bytes, flags: str = "") -> int:
        """Deliver one mail into INBOX (IMAP APPEND); returns its UID."""
        c = self.client()
        try:
            typ, data = c.append("INBOX", f"({flags})" if flags else None, None, raw)
            assert typ == "OK", data
            return int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
        finally:
            c.logout()

    def flags(self) -> dict[int, set[str]]:
        """UID → flags of every mail in INBOX, read without changing anything."""
        c = self.client()
        try:
            typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
            assert typ == "OK"
            out: dict[int, set[str]] = {}
            for item in data or []:
                if not item:
                    continue
                line = item.decode() if isinstance(item, bytes) else item[0].decode()
                m = re.search(r"UID (\d+)", line)
                f = re.search(r"FLAGS \(([^)]*)\)", line)
                if m and f:
                    out[int(m.group(1))] = set(f.group(1).split())
            return out
        finally:
            c.logout()

    def clear(self) -> None:
        c = self.client()
        try:
            c.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)")
            c.expunge()
        finally:
            c.logout()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _config(root: Path, port: int, tls_port: int, uid: int, gid: int, as_root: bool) -> str:
    lines = [
        "protocols = imap",
        "listen = 127.0.0.1",
        f"base_dir = {root}/run",
        f"state_dir = {root}/state",
        f"log_path = {root}/dovecot.log",
        "ssl = yes",
        f"ssl_cert = <{root}/cert.pem",
        f"ssl_key = <{root}/key.pem",
        "disable_plaintext_auth = no",  # the plain-port tests log in over loopback without TLS
        "auth_mechanisms = plain login",
        "first_valid_uid = 1",
        "last_valid_uid = 0",
        "mail_location = maildir:~/Maildir",
        "passdb {", "  driver = passwd-file", f"  args = scheme=PLAIN username_format=%u {root}/passwd", "}",
        "userdb {", "  driver = static", f"  args = uid={uid} gid={gid} home={root}/home/%u", "}",
        "service imap-login {", "  chroot =",
        "  inet_listener imap {", "    address = 127.0.0.1", f"    port = {port}", "  }",
        "  inet_listener imaps {", "    address = 127.0.0.1", f"    port = {tls_port}", "  }",
        "}",
        "service anvil {", "  chroot =", "}",
    ]
    if not as_root:  # Dovecot runs unprivileged: every internal process as this user
        user = __import__("pwd").getpwuid(uid).pw_name
        lines += [f"default_internal_user = {user}", f"default_login_user = {user}"]
    return "\n".join(lines) + "\n"


@contextmanager
def running_dovecot(start_timeout: float = 30.0) -> Iterator[Dovecot]:
    """Start Dovecot in a fresh directory, wait until it takes a login, stop and remove it afterwards.

    Raises RuntimeError when it does not start (with its output and log).
    """
    missing = dovecot_missing()
    if missing:
        raise RuntimeError(missing)
    as_root = os.geteuid() == 0
    # Dovecot refuses mail access as root; as root the mailbox belongs to 'nobody', so the directory
    # must be reachable by it (pytest's tmp_path is 0700).
    root = Path(tempfile.mkdtemp(prefix="hub-dovecot-"))
    root.chmod(0o755)
    uid, gid = (65534, 65534) if as_root else (os.getuid(), os.getgid())
    (root / "home").mkdir()
    (root / "run").mkdir()
    (root / "state").mkdir()
    if as_root:
        os.chown(root / "home", uid, gid)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"), "-days", "2",
                    "-subj", "/CN=localhost"], check=True, capture_output=True)
    port, tls_port = _free_port(), _free_port()
    (root / "dovecot.conf").write_text(_config(root, port, tls_port, uid, gid, as_root))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(root / "dovecot.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    server = Dovecot(root, proc, port, tls_port)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                log = (root / "dovecot.log").read_text(errors="replace") if (root / "dovecot.log").exists() else ""
                raise RuntimeError(f"Dovecot did not start: {out}\n{log}")
            try:
                server.client().logout()
                break
            except (OSError, imaplib.IMAP4.error):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
