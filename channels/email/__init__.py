"""The e-mail channel: the SMTP/LMTP listener and IMAP poller (``listener``), MIME parsing (``parse``),
outbound mail and acknowledgements (``outbound``), ``citizen-hub email …`` (``cli``) and ``[email]``
(``settings``)."""

from channels.email.settings import EmailSettings
from hub.plugins import Channel, SettingsSection

CHANNEL = Channel(
    name="email",
    settings=(SettingsSection("email", EmailSettings, "E-mail channel: inbound listener, IMAP, outbound SMTP."),),
    commands="channels.email.cli:register",
    outbound={"email": "channels.email.outbound:build_email_adapter"},
)
