"""SMS and phone through Twilio: signed webhooks in, a German speech menu that answers, SMS out.

Modules, each with one job:

* :mod:`~channels.twilio.settings` — the ``[twilio]`` config section;
* :mod:`~channels.twilio.signature` — ``X-Twilio-Signature`` checked with twilio's RequestValidator
  against ``public_url`` + path, rejections logged (URL, never body) and counted;
* :mod:`~channels.twilio.payload` — the webhook forms as models and the one pure parser
  (raw body + headers → payload or a typed error);
* :mod:`~channels.twilio.gsm7` — SMS encoding and segment counting;
* :mod:`~channels.twilio.answer` — the direct answer (service, office, phone, today's hours);
* :mod:`~channels.twilio.sms` — what an SMS is answered (keywords, direct answer, acknowledgement);
* :mod:`~channels.twilio.voice` — the phone menu as pure functions, and its TwiML;
* :mod:`~channels.twilio.outbound` — the ``sms`` adapter of the outbox (twilio's async client).
"""

from channels.twilio.settings import TwilioSettings
from hub.plugins import Channel, SettingsSection

CHANNEL = Channel(
    name="twilio",
    settings=(SettingsSection("twilio", TwilioSettings, "SMS and phone through Twilio: webhooks, the speech menu, "
                              "outbound SMS. Off while account_sid is empty."),),
    routes="channels.twilio.routes:setup",
    # A written answer to a phone case goes to the caller as an SMS, as one to an SMS case does.
    outbound={"sms": "channels.twilio.outbound:build_sms_adapter",
              "phone": "channels.twilio.outbound:build_sms_adapter"},
    privacy="channels.twilio.store:PRIVACY",  # calls in the menu, opt-outs
    openapi="channels.twilio.routes:OPERATIONS",
    recipients="channels.twilio.store:recipient_refusal",  # no SMS answer to a number that sent STOP
)
