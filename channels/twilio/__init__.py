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
* :mod:`~channels.twilio.twiml`, :mod:`~channels.twilio.voice` — the phone menu as pure functions;
* :mod:`~channels.twilio.outbound` — the ``sms`` adapter of the outbox (twilio's async client).
"""
