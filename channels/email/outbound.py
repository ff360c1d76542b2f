"""Outbound e-mail: acknowledgements and agents' answers, threaded, sent with aiosmtplib.

* :func:`build_message` — a proper RFC 5322 message: the outbox's stable ``external_id`` as Message-ID
  (fully qualified: ``[queue] message_id_domain``; so the citizen's reply threads back by In-Reply-To),
  In-Reply-To/References to the citizen's mails, the case token ``[#token]`` in the subject, and
  ``Auto-Submitted: auto-replied`` (an acknowledgement of a mail) or ``auto-generated`` (the confirmation
  of a web form) on automatic mail (RFC 3834), which well-behaved auto-responders do not answer.
  Automatic mail leaves with the **null envelope sender** ``MAIL FROM:<>`` (RFC 3834 §3.3, RFC 5321
  §4.5.5): a bounce of it goes nowhere, so no bounce or out-of-office can loop back into the hub.
  An answer of an agent ends with the link to the case's status page when ``[web] public_base_url`` is set.
* :class:`EmailAdapter` — the ``email`` channel adapter of the outbox (:mod:`channels`): hands the message
  to the configured relay (STARTTLS/TLS, AUTH) and returns a :class:`~channels.SendResult`; it never
  raises. 4xx and network trouble are temporary (the outbox retries), 5xx for the recipient is final.
* Acknowledgements: :func:`render_ack` (German and English), :func:`ack_refusal` (no automatic answer to
  robots, lists, our own address), :func:`ack_recipient` and :class:`AckRateLimiter` (per address and for
  all addresses together).

**Backscatter.** Whoever sends a mail chooses its From, Reply-To and Subject; an acknowledgement that goes
where the sender points and repeats what they wrote turns the hub into a spam relay with a good
reputation. So an acknowledgement goes to the **From address only** — the address DMARC authenticates
at the receiving MX (it aligns SPF/DKIM with the From domain), never to Reply-To (unauthenticated, free
choice) nor to the envelope sender (of list, forwarded and bulk mail a VERP/SRS bounce address). It echoes
**nothing** the sender wrote — no subject, no display name, only the case token and, where attachments
were left out, their names (cut to 80 characters) with the reason —, and at most ``ack_rate_limit`` go to
one address and ``ack_global_limit`` to all addresses together per ``ack_rate_window_seconds``.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any

import aiosmtplib

from channels.email.settings import EmailSettings, email_settings
from hub.queue.adapters import OutboundMessage, SendResult
from hub.queue.cases import subject_tag, token_in_subject
from hub.queue.requests import normalise_email
from knowledge.settings import ConfigError

log = logging.getLogger(__name__)

#: Outbound message kind of an acknowledgement of a mail (an automatic mail); others are written by people.
ACK_KIND = "ack"
#: Outbound message kind of the confirmation of a web-form request whose citizen chose an answer by e-mail.
CONFIRMATION_KIND = "confirmation"
AUTOMATIC_KINDS = frozenset({ACK_KIND, CONFIRMATION_KIND})
#: RFC 3834 Auto-Submitted value per automatic kind: an acknowledgement answers a mail, a confirmation does not.
_AUTO_SUBMITTED = {ACK_KIND: "auto-replied", CONFIRMATION_KIND: "auto-generated"}
_MAX_REFERENCES = 20
_ROBOT_RECIPIENT = re.compile(r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|bounces?)(\+.*)?$", re.I)

# -- acknowledgement templates ------------------------------------------------------------------------

ACK_TEMPLATES: dict[str, tuple[str, str]] = {
    "de": (
        "Eingangsbestätigung {tag}",
        "Guten Tag,\n\n"
        "vielen Dank für Ihre Nachricht. Wir haben Ihr Anliegen erhalten und unter dem Zeichen {token} "
        "erfasst.\n\n"
        "{dropped}"
        "Wir melden uns so bald wie möglich bei Ihnen. Wenn Sie zu diesem Anliegen noch etwas ergänzen "
        "möchten, antworten Sie bitte einfach auf diese E-Mail und lassen Sie das Zeichen {tag} im Betreff "
        "stehen.\n\n"
        "{status}"
        "Diese Nachricht wurde automatisch erstellt.\n\n"
        "Mit freundlichen Grüßen\n{sender}\n",
    ),
    "en": (
        "We have received your message {tag}",
        "Hello,\n\n"
        "thank you for your message. We have received your request and registered it under the reference "
        "{token}.\n\n"
        "{dropped}"
        "We will get back to you as soon as possible. If you would like to add anything, simply reply to "
        "this e-mail and keep the reference {tag} in the subject line.\n\n"
        "{status}"
        "This message was generated automatically.\n\n"
        "Kind regards\n{sender}\n",
    ),
}

_DROPPED = {
    "de": ("Diese Anhänge haben wir nicht übernommen:\n{items}\nBitte senden Sie sie bei Bedarf auf anderem Weg "
           "oder kleiner erneut.\n\n", "„{name}“ ({size}): {reason}"),
    "en": ("We could not take these attachments:\n{items}\nIf they are needed, please send them another way or "
           "smaller.\n\n", "\"{name}\" ({size}): {reason}"),
}
_STATUS = {
    "de": "Den Stand Ihres Anliegens sehen Sie jederzeit unter:\n{url}\n\n",
    "en": "You can follow your request at any time at:\n{url}\n\n",
}
_MAX_NAMED = 20


def dropped_lines(language: str, dropped: Sequence[Any]) -> str:
    """The paragraph naming attachments that were left out and why (``DroppedAttachment``s), or ''."""
    if not dropped:
        return ""
    head, item = _DROPPED.get(language, _DROPPED["de"])
    items = []
    for d in list(dropped)[:_MAX_NAMED]:
        name = " ".join(str(d.filename).split())
        name = name if len(name) <= 80 else name[:79] + "…"
        size = f"{d.size / 1_000_000:.1f} MB"
        items.append("- " + item.format(name=name, size=size.replace(".", ",") if language != "en" else size,
                                        reason=d.reason))
    if len(dropped) > _MAX_NAMED:
        items.append(f"- … ({len(dropped) - _MAX_NAMED})")
    return head.format(items="\n".join(items))


def render_ack(language: str, *, token: str, sender: str, dropped: Sequence[Any] = (),
               status_url: str | None = None) -> tuple[str, str]:
    """Subject and text of an acknowledgement in ``language`` (``de`` or ``en``; anything else: ``de``).

    Nothing the sender wrote is repeated (see "Backscatter" above) except the names of ``dropped``
    attachments, which the citizen needs to know; ``status_url`` is the case's status page, if any.
    """
    subject_tpl, body_tpl = ACK_TEMPLATES.get(language, ACK_TEMPLATES["de"])
    lang = language if language in ACK_TEMPLATES else "de"
    values = {"tag": subject_tag(token), "token": token, "sender": sender,
              "dropped": dropped_lines(lang, dropped),
              "status": _STATUS[lang].format(url=status_url) if status_url else ""}
    return subject_tpl.format(**values)[:500], body_tpl.format(**values)


def ack_language(configured: str, detected: str | None) -> str:
    if configured == "auto":
        return detected or "de"
    return configured


class AckRateLimiter:
    """At most ``limit`` acknowledgements per address and ``global_limit`` for all addresses together within
    ``window`` seconds (thread-safe; ``global_limit`` None = no global limit).

    Kept in memory, per process: it stops ack storms (a robot we did not recognise, a citizen's mail
    loop) and caps backscatter — a flood of mails with forged senders gets at most ``global_limit``
    acknowledgements an hour, however many addresses it uses. It is not an accounting of what was sent.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic,
                 max_senders: int = 100_000, global_limit: int | None = None) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_senders = max_senders
        self.global_limit = global_limit
        self._seen: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def allow(self, address: str) -> bool:
        """True (and counted) when ``address`` may get one more acknowledgement now."""
        return self.refuse(address) is None

    def refuse(self, address: str) -> str | None:
        """Why ``address`` may not get one more acknowledgement now, or None (and then it is counted)."""
        if self.limit <= 0:
            return "acknowledgements are off"
        now = self.clock()
        key = address.lower()
        with self._lock:
            while self._all and self._all[0] <= now - self.window:
                self._all.popleft()
            if self.global_limit is not None and len(self._all) >= self.global_limit:
                return "the global acknowledgement limit is reached"
            stamps = self._seen.get(key)
            if stamps is None:
                if len(self._seen) >= self.max_senders:
                    self._prune(now)
                stamps = self._seen[key] = deque()
            while stamps and stamps[0] <= now - self.window:
                stamps.popleft()
            if len(stamps) >= self.limit:
                return "the acknowledgement limit of this address is reached"
            stamps.append(now)
            self._all.append(now)
            return None

    def _prune(self, now: float) -> None:
        for key in [k for k, v in self._seen.items() if not v or v[-1] <= now - self.window]:
            del self._seen[key]


def ack_rate_limiter(settings: EmailSettings) -> AckRateLimiter:
    """The acknowledgement limiter ``[email]`` configures (per address and global)."""
    return AckRateLimiter(settings.ack_rate_limit, settings.ack_rate_window_seconds,
                          global_limit=settings.ack_global_limit)


def ack_recipient(parsed: Any) -> str | None:
    """Where an acknowledgement of a mail goes: its From address, never Reply-To (see "Backscatter")."""
    return parsed.from_address


def ack_refusal(parsed: Any, settings: EmailSettings) -> str | None:
    """Why a mail (a :class:`~channels.email.parse.ParsedMail`) gets no acknowledgement, or None."""
    if not settings.ack_enabled or settings.ack_rate_limit <= 0:
        return "acknowledgements are off"
    if parsed.automatic:
        return parsed.automatic
    if getattr(parsed, "auto_reply", None):
        return parsed.auto_reply
    address = ack_recipient(parsed)
    if not address:
        return "no usable sender address"
    if address == settings.address or (parsed.from_address and parsed.from_address == settings.address):
        return "our own address"
    if _ROBOT_RECIPIENT.match(address.rsplit("@", 1)[0]):
        return "robot address"
    return None


# -- building and sending ---------------------------------------------------------------------------------


def _subject(message: OutboundMessage) -> str:
    subject = " ".join((message.subject or "").split()) or "Ihr Anliegen"
    if message.case_token and token_in_subject(subject) != message.case_token:
        subject = f"{subject} {subject_tag(message.case_token)}"
    return subject


def build_message(message: OutboundMessage, settings: EmailSettings, *, now: datetime | None = None,
                  status_base_url: str = "") -> EmailMessage:
    """The RFC 5322 message for one outbound message of a case (``status_base_url``: ``[web]
    public_base_url``, for the status link under an agent's answer)."""
    msg = EmailMessage()
    msg["From"] = formataddr((settings.display_name, settings.address))
    msg["To"] = message.recipient or ""
    msg["Subject"] = _subject(message)
    msg["Date"] = format_datetime(now.astimezone()) if now else format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = message.external_id or make_msgid(domain=settings.own_domain)
    refs = [r for r in message.in_reply_to if r.startswith("<") and r.endswith(">")][-_MAX_REFERENCES:]
    if refs:
        msg["In-Reply-To"] = refs[-1]
        msg["References"] = " ".join(refs)
    text = message.text or ""
    if message.kind in AUTOMATIC_KINDS:
        msg["Auto-Submitted"] = _AUTO_SUBMITTED[message.kind]  # RFC 3834 section 5
        msg["X-Auto-Response-Suppress"] = "All"  # Exchange/Outlook: no out-of-office to an automatic mail
        msg["Precedence"] = "auto_reply"  # older auto-responders look only at this
    elif status_base_url and message.case_token:
        text = text.rstrip("\n") + "\n\n-- \n" + _STATUS["de"].format(
            url=f"{status_base_url.rstrip('/')}/status/{message.case_token}").rstrip("\n") + "\n"
    msg.set_content(text, charset="utf-8")
    return msg


def envelope_sender(message: OutboundMessage, settings: EmailSettings) -> str:
    """``MAIL FROM`` of a message: the null sender ``<>`` for automatic mail (RFC 3834 §3.3), else ours."""
    return "" if message.kind in AUTOMATIC_KINDS else settings.address


def _code_result(code: int, what: str, detail: str) -> SendResult:
    text = f"{what}: {code} {detail}".strip()[:500]
    # 5xx is final; 4xx (and anything odd) may pass.
    return SendResult.failed(text) if code >= 500 else SendResult.retry(text)


def classify_error(exc: BaseException) -> SendResult:
    """A send failure as a SendResult: temporary (retry through the outbox) or final."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients[0] if exc.recipients else None
        if refused is None:
            return SendResult.retry("all recipients refused")
        return _code_result(refused.code, "recipient refused", refused.message)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # A 535 is final for SMTP, but the cause is our configuration, which an operator fixes: keep the
        # message for retries until its deadline instead of failing every queued answer at once.
        return SendResult.retry(f"relay refused our login ({exc.code}): check [email] smtp_username/password")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        what = "sender refused" if isinstance(exc, aiosmtplib.SMTPSenderRefused) else "relay refused"
        return _code_result(exc.code, what, exc.message)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return SendResult.retry(f"relay does not support what the config asks for: {exc}"[:500])
    if isinstance(exc, (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError)):
        return SendResult.retry(f"relay not reachable: {type(exc).__name__}: {exc}"[:500])
    return SendResult.retry(f"unexpected {type(exc).__name__} while sending"[:500])


class EmailAdapter:
    """The ``email`` channel adapter: one outbound message → one mail to the relay. Never raises."""

    name = "email"

    def __init__(self, settings: EmailSettings, status_base_url: str = "") -> None:
        if not settings.smtp_host.strip():
            raise ConfigError("[email] smtp_host is empty: outbound e-mail needs a relay")
        if settings.smtp_username and not settings.smtp_password:
            raise ConfigError(
                "[email] smtp_username is set but smtp_password is empty (give CITIZEN_HUB_EMAIL__SMTP_PASSWORD)"
            )
        self.settings = settings
        self.status_base_url = status_base_url

    def _refusal(self, message: OutboundMessage) -> str | None:
        if not message.recipient:
            return "the case has no e-mail address"
        try:
            recipient = normalise_email(message.recipient)
        except ValueError:
            return "the recipient is not an e-mail address"
        if recipient == self.settings.address:
            return "the recipient is our own address (mail loop)"
        if message.kind in AUTOMATIC_KINDS and _ROBOT_RECIPIENT.match(recipient.rsplit("@", 1)[0]):
            return "no automatic answer to a robot address"
        return None

    async def send(self, message: OutboundMessage) -> SendResult:
        refusal = self._refusal(message)
        if refusal:
            return SendResult.failed(refusal)
        s = self.settings
        try:
            mail = build_message(message, s, status_base_url=self.status_base_url)
            _errors, response = await aiosmtplib.send(
                mail,
                sender=envelope_sender(message, s),
                recipients=[normalise_email(message.recipient or "")],
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username or None,
                password=s.smtp_password or None,
                use_tls=s.smtp_tls,
                start_tls=True if s.smtp_starttls else False,
                validate_certs=s.smtp_validate_certs,
                timeout=s.smtp_timeout_seconds,
            )
        except Exception as exc:
            result = classify_error(exc)
            log.warning("email: message %s to the relay failed (%s): %s", message.message_id,
                        "retry" if result.temporary else "final", result.detail)
            return result
        return SendResult.sent(f"{mail['Message-ID']} accepted by {s.smtp_host}: {response}"[:500])


def build_email_adapter(settings: Any) -> EmailAdapter:
    """Factory for the channel registry (``channels.CHANNELS['email']``)."""
    web = getattr(settings, "web", None)  # the status page's public address, when the web channel has one
    return EmailAdapter(email_settings(settings), status_base_url=str(getattr(web, "public_base_url", "") or ""))
