"""The Twilio channels' HTTP routes (``Channel.routes``).

``setup(app)`` adds, when ``[twilio] account_sid`` is set:

* ``POST /twilio/sms`` — an incoming SMS or MMS (:mod:`channels.twilio.inbound`);
* ``POST /twilio/status?message_id=N`` — delivery reports of the hub's SMS (:mod:`channels.twilio.inbound`);
* ``POST /twilio/voice`` and ``POST /twilio/voice/<step>`` — the phone menu; ``/twilio/voice/status`` — the
  call ended; ``/twilio/voice/transfer`` — how a transfer to an agent ended (:mod:`channels.twilio.phone`).

A channel that is on but lacks its token or public URL stops the start (:meth:`TwilioSettings.require`).
Refused signatures are counted in ``/metrics`` (``citizen_hub_twilio_webhooks_rejected_total`` by route and
reason), so a wrong ``public_url`` or token shows at once; SMS and calls answered "try later" by the intake
limits in ``citizen_hub_twilio_webhooks_limited_total`` by route.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from aiohttp import web
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from channels.twilio import inbound, phone
from channels.twilio.records import WithIntake
from channels.twilio.settings import twilio_settings
from channels.twilio.signature import SignatureChecker
from channels.twilio.webhooks import TWILIO, TwilioState, queue_service_of
from hub.http.app import SETTINGS
from hub.http.ratelimit import install_limits

log = logging.getLogger(__name__)


class RejectedWebhooks(Collector):
    """The signature checker's refusals, read at scrape time."""

    def __init__(self, checker: SignatureChecker, state: TwilioState | None = None) -> None:
        self.checker = checker
        self.state = state

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("citizen_hub_twilio_webhooks_rejected",
                                     "Twilio webhooks refused because their signature did not verify, by route and "
                                     "reason (missing, forged, unsupported_algorithm): a wrong [twilio] public_url "
                                     "or auth_token shows here.", labels=["route", "reason"])
        for (route, reason), n in sorted(self.checker.counts().items()):
            family.add_metric([route, reason], n)
        yield family
        limited = CounterMetricFamily("citizen_hub_twilio_webhooks_limited",
                                      "SMS and calls answered 'please try again later' because the sender's number "
                                      "was over its intake limit ([limits] sender_per_hour), by route; nothing of "
                                      "them was stored.", labels=["route"])
        for route in ("/twilio/sms", "/twilio/voice"):
            limited.add_metric([route], self.state.limited_counts().get(route, 0) if self.state else 0)
        yield limited


async def _start(app: web.Application) -> None:
    """Once the queue runs: the writes after each intake batch, the refusals in /metrics."""
    service = queue_service_of(app)
    if service is None:
        log.error("twilio: the queue is not running; webhooks are answered with an apology")
        return
    state = app[TWILIO]
    state.extra["after"] = WithIntake(service.engine).attach(service.writer)
    checker = state.checker
    service.metrics.add_collector(("twilio", id(checker)), lambda: RejectedWebhooks(checker, state))


def setup(app: web.Application) -> None:
    """Add the Twilio routes when the channel is on (and stop the start when it is half-configured)."""
    settings = twilio_settings(app[SETTINGS])
    if not settings.enabled:
        log.info("twilio: [twilio] account_sid is empty; the SMS and phone channels are off")
        return
    settings.require()
    app[TWILIO] = TwilioState(settings=settings, checker=SignatureChecker(settings.auth_token, settings.public_url),
                              hub_settings=app[SETTINGS])
    install_limits(app)  # the intake limits every channel shares: an SMS number's budget is the sender's
    app.router.add_post("/twilio/sms", inbound.sms_webhook)
    app.router.add_post("/twilio/status", inbound.status_webhook)
    app.router.add_post("/twilio/voice", phone.call_webhook)
    app.router.add_post("/twilio/voice/status", phone.call_status_webhook)
    app.router.add_post("/twilio/voice/transfer", phone.transfer_webhook)
    app.router.add_post("/twilio/voice/{step}", phone.gather_webhook)
    app.on_startup.append(_start)
    log.info("twilio: SMS and phone webhooks under %s/twilio/", settings.public_url)


def _operations() -> dict[tuple[str, str], dict]:
    """The OpenAPI operations of the webhooks (``Channel.openapi``): Twilio's form posts, signed."""
    from channels.twilio import voice
    from hub.http.openapi import ERROR, form_body, operation, path, query, resp

    signed = [{"twilioSignature": []}]
    text = {"type": "string"}
    twiml = {"200": resp("TwiML for Twilio", text, "application/xml"),
             "404": resp("No such step of the menu", ERROR),
             "default": resp("Refused (bad signature, malformed form), with the reason", text, "text/plain")}
    form = form_body({"From": text, "To": text, "Body": text, "MessageSid": text, "CallSid": text,
                      "SpeechResult": text, "Digits": text, "CallStatus": text, "MessageStatus": text}, ())
    message_id = query("message_id", {"type": "integer", "minimum": 1}, "The hub's outbound message")
    return {
        ("POST", "/twilio/sms"): operation("An incoming SMS or MMS", security=signed, body=form, responses=twiml),
        ("POST", "/twilio/status"): operation("A delivery report of the hub's SMS", security=signed, body=form,
                                              parameters=[message_id], responses=twiml),
        ("POST", "/twilio/voice"): operation("A call comes in: the phone menu", security=signed, body=form,
                                             responses=twiml),
        ("POST", "/twilio/voice/status"): operation("A call ended", security=signed, body=form, responses=twiml),
        ("POST", "/twilio/voice/transfer"): operation("How a transfer to an agent ended", security=signed,
                                                      body=form, responses=twiml),
        ("POST", "/twilio/voice/{step}"): operation(
            "The caller's answer to one step of the menu", security=signed, body=form, responses=twiml,
            parameters=[path("step", {"enum": [s for s in voice.STEPS if s != voice.TRANSFER]}, "The menu's step")]),
    }


OPERATIONS = _operations()
