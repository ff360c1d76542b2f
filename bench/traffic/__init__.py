"""Traffic against the real hub processes: the crash harness (``bench/crash.py``, ``make crash``, and the
bounded tests in ``tests/crash/``) and the soak (``bench/soak.py``, ``make soak``) share it.

* :mod:`bench.traffic.hub` starts ``citizen-hub serve``, ``citizen-hub email serve`` and
  ``citizen-hub email poll-imap`` as subprocesses, SIGKILLs them, starts them again;
* :mod:`bench.traffic.drivers` is each channel as its clients see it;
* :mod:`bench.traffic.sink` is the outside mail server the outbox delivers to (aiosmtpd).

Adding a channel (paper: ``channels/paper``; the phone menu of ``channels/twilio``)
------------------------------------------------------------------------------------
``SmsDriver`` (Twilio SMS) is the example of a channel that joined this way: about forty lines.
Write one :class:`bench.traffic.drivers.Driver` subclass and add it to ``DRIVERS``:

* ``name``; ``roles``: the hub processes it talks to (``"http"`` for a webhook; add a role in
  ``HubProcesses._command`` if the channel has its own process, e.g. a scan-folder watcher);
* ``channel``: the name of its entry in ``channels.REGISTRY`` (``tests/crash`` fails for a registered
  channel that no driver names);
* ``send(ctx, ticket)``: send one request the way the real client does and say what came back:
  ``ACK`` when the hub acknowledged it (Twilio: a 200 with TwiML to a signed webhook post; paper: the
  upload's 2xx), ``LOST`` when the connection broke (the hub died), ``refused(status)`` otherwise;
  keep what is needed to send it again in ``ticket.data`` (the same ``MessageSid``, the same scan);
* ``idempotent``: whether sending the same ticket again must map to the same request (Twilio retries
  a webhook with the same ``MessageSid``/``CallSid``; a paper form id); ``must_arrive`` if the source
  keeps it until acknowledged (a scan folder), acknowledged later in ``settle``;
* ``stored(conn, tickets)``: how many inbound messages are each ticket's request (SMS:
  ``channel='sms'`` and ``external_id`` = the ``MessageSid``).

Then ``python -m bench.crash --channels …,sms`` runs it, and the tests in ``tests/crash/`` take every
driver in ``DRIVERS`` whose processes can run here. The checks of what was stored (exactly once, nothing
half-stored) are the harness's, the same for every channel.
"""
