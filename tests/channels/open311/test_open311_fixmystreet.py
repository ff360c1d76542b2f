"""Open311 as FixMyStreet speaks it (mysociety/fixmystreet ``perllib/Open311.pm``), replayed against the real
app: its POST (extended description, lat/long, repeated ``media_url`` of ``multi_photos``, ``attribute[…]``
values, ``jurisdiction_id``), multipart photos, the key-less ``GET requests.xml?service_request_id=…``
it sends for the status of its reports, ``servicerequestupdates.xml`` with ``start_date``/``end_date``,
read with XML::Simple's rules (``request``/``request_update`` forced to arrays). Also issue 15's defect 4:
the client's ``service_code`` is the case's service, the text finds only the office."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import aiohttp
import pytest
from sqlalchemy import func, select
from web_support import png

from channels.open311.api import parse_text
from hub.http.tokens import add_token
from hub.queue.adapters import adapter_targets
from hub.queue.cases import attachment_t, case_t, message_t

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NORDERSTEDT = "010600063063"
MUENCHEN = "091620000000"
RATHAUS = ("53.706120", "9.996940")  # Rathausallee, Norderstedt (Utils::truncate_coordinate: 6 places)


@pytest.fixture()
async def client(make_client):
    return await make_client()


@pytest.fixture()
def keys(hub):
    engine, _ = hub
    return {"fms": add_token(engine, "fixmystreet", "open311"), "other": add_token(engine, "other-app", "open311"),
            "agent": add_token(engine, "agent-all", "agent", all_authorities=True)}


def fms_post(key: str, **extra) -> list[tuple[str, str]]:
    """The body of Open311.pm's send_service_request (UK cobrand description, multi_photos, attributes)."""
    description = ("title: Sperrmüll am Straßenrand\n\ndetail: Ein alter Schrank steht seit Tagen auf dem "
                   "Gehweg.\n\nurl: https://fms.example/report/4711\n\nSubmitted via FixMyStreet\n")
    fields = [("jurisdiction_id", NORDERSTEDT), ("api_key", key), ("description", description),
              ("service_code", "sh-sperrmuell"), ("first_name", "Erika"), ("last_name", "Mustermann"),
              ("email", "erika@example.org"), ("lat", RATHAUS[0]), ("long", RATHAUS[1]),
              ("media_url", "https://fms.example/photo/4711.0.full.jpeg"),
              ("media_url", "https://fms.example/photo/4711.1.full.jpeg"),
              ("attribute[fixmystreet_id]", "4711"), ("attribute[title]", "Sperrmüll am Straßenrand"),
              ("attribute[report_url]", "https://fms.example/report/4711"),
              ("attribute[asset][]", "Laterne 12"), ("attribute[asset][]", "Laterne 13")]
    replaced = {k for k, _ in extra.items()}
    return [(k, v) for k, v in fields if k not in replaced] + [(k, v) for k, v in extra.items() if v is not None]


def simple(text: str, force: tuple[str, ...] = ("request", "request_update", "error")) -> object:
    """XML::Simple as Open311.pm configures it: the group tags forced to arrays, empty elements undef."""
    def conv(el: ET.Element):
        children = list(el)
        if not children:
            return el.text if el.text and el.text.strip() else None
        out: dict = {}
        for c in children:
            value = conv(c)
            if c.tag in force:
                out.setdefault(c.tag, []).append(value)
            else:
                out[c.tag] = value
        return out
    return conv(ET.fromstring(text.encode("utf-8")))


async def post(client, body: list[tuple[str, str]], expect: int = 200) -> str:
    resp = await client.post("/open311/v2/requests.xml", data=urlencode(body), headers=FORM)
    text = await resp.text()
    assert resp.status == expect, text
    return text


async def submit(client, body) -> int:
    obj = simple(await post(client, body))
    return int(obj["request"][0]["service_request_id"])


async def route_all(client) -> None:
    await asyncio.to_thread(client.service.routing.run_until_empty)


def case(client, case_id: int) -> dict:
    with client.engine.connect() as conn:
        return dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())


# -- defect 4: the client's service_code -------------------------------------------------------------------


async def test_a_named_service_is_the_case_s_service_and_the_text_finds_only_the_office(client, keys, kb):
    # The text speaks of a pothole (the router alone picks sh-strassenschaden); the client named Sperrmüll.
    body = fms_post(keys["fms"], description="Ein Schlagloch auf der Straße vor dem Rathaus")
    case_id = await submit(client, body)
    await route_all(client)
    row = case(client, case_id)
    assert row["channel"] == "open311" and row["requested_service_id"] == "sh-sperrmuell"
    assert row["service_id"] == "sh-sperrmuell" and row["state"] == "routed"
    norderstedt = kb.regions.get(NORDERSTEDT)
    assert row["authority_id"] == kb.responsible_for(kb.services["sh-sperrmuell"], norderstedt).authority_id
    obj = simple(await (await client.get(f"/open311/v2/requests/{case_id}.xml",
                                         params={"api_key": keys["fms"]})).text())
    assert obj["request"][0]["service_code"] == "sh-sperrmuell"
    assert obj["request"][0]["service_name"] == "Sperrmüll anmelden"

    # An agent re-routes: GET requests/{id} reports the service the case really has now.
    resp = await client.post(f"/api/cases/{case_id}/reroute", headers={"Authorization": f"Bearer {keys['agent']}"},
                             json={"service_id": "sh-strassenschaden", "authority_id": "stadt-010600063063"})
    assert resp.status == 200, await resp.text()
    obj = simple(await (await client.get(f"/open311/v2/requests/{case_id}.xml",
                                         params={"api_key": keys["fms"]})).text())
    assert obj["request"][0]["service_code"] == "sh-strassenschaden"


async def test_an_unknown_service_code_is_kept_and_the_text_decides(client, keys):
    body = fms_post(keys["fms"], service_code="fms-pothole", description="Schlagloch auf der Straße")
    case_id = await submit(client, body)
    await route_all(client)
    row = case(client, case_id)
    assert row["requested_service_id"] is None and row["service_id"] == "sh-strassenschaden"
    with client.engine.connect() as conn:
        text = conn.execute(select(message_t.c.text).where(message_t.c.case_id == case_id)).scalar_one()
    assert "fms-pothole" in text  # the agent sees what the client asked for
    obj = simple(await (await client.get("/open311/v2/requests.xml", params={"api_key": keys["fms"]})).text())
    assert obj["request"][0]["service_code"] == "sh-strassenschaden"


async def test_open311_cases_have_their_own_channel_and_are_answered_by_pick_up(client, keys):
    case_id = await submit(client, fms_post(keys["fms"]))
    await route_all(client)
    assert adapter_targets()["open311"] == "hub.queue.outbox:build_pickup_adapter"
    resp = await client.post(f"/api/cases/{case_id}/reply", headers={"Authorization": f"Bearer {keys['agent']}"},
                             json={"text": "Die Abholung ist für Montag geplant."})
    assert resp.status == 201, await resp.text()
    resp = await client.get("/api/cases", params={"channel": "open311"},
                            headers={"Authorization": f"Bearer {keys['agent']}"})
    assert resp.status == 200, await resp.text()
    assert [c["id"] for c in (await resp.json())["cases"]] == [case_id]


# -- photos, media_url, attributes -------------------------------------------------------------------------


async def test_every_media_url_and_every_attribute_value_is_stored(client, keys):
    case_id = await submit(client, fms_post(keys["fms"]))
    with client.engine.connect() as conn:
        msg = conn.execute(select(message_t).where(message_t.c.case_id == case_id)).mappings().one()
        urls = conn.execute(select(attachment_t.c.url).where(attachment_t.c.message_id == msg["id"])
                            .order_by(attachment_t.c.id)).scalars().all()
    _, meta = parse_text(msg["text"])
    assert meta["media_urls"] == ["https://fms.example/photo/4711.0.full.jpeg",
                                  "https://fms.example/photo/4711.1.full.jpeg"]
    assert urls == meta["media_urls"]  # recorded as attachments by URL, never fetched
    assert "Attribut asset: Laterne 12" in msg["text"] and "Attribut asset: Laterne 13" in msg["text"]
    assert "Attribut fixmystreet_id: 4711" in msg["text"]
    assert msg["channel"] == "open311"


async def test_photos_as_multipart_photo1_photo2_are_all_stored(client, keys):
    form = aiohttp.FormData()
    for k, v in fms_post(keys["fms"], media_url=None):
        if k != "media_url":
            form.add_field(k, v)
    form.add_field("photo1", png(200), filename="photo1.png", content_type="image/png")
    form.add_field("photo2", png(300), filename="photo2.png", content_type="image/png")
    resp = await client.post("/open311/v2/requests.xml", data=form)
    text = await resp.text()
    assert resp.status == 200, text
    case_id = int(simple(text)["request"][0]["service_request_id"])
    with client.engine.connect() as conn:
        names = conn.execute(
            select(attachment_t.c.filename).join(message_t, message_t.c.id == attachment_t.c.message_id)
            .where(message_t.c.case_id == case_id).order_by(attachment_t.c.id)).scalars().all()
    assert names == ["photo1.png", "photo2.png"]


async def test_limits_still_apply_to_photos_media_urls_and_attributes(client, keys):
    form = aiohttp.FormData()
    for k, v in fms_post(keys["fms"]):
        form.add_field(k, v)
    for i in range(1, 5):  # [web] max_attachments is 3
        form.add_field(f"photo{i}", png(100), filename=f"p{i}.png", content_type="image/png")
    resp = await client.post("/open311/v2/requests.xml", data=form)
    assert resp.status == 413, await resp.text()
    many_urls = fms_post(keys["fms"]) + [("media_url", f"https://fms.example/p/{i}.jpeg") for i in range(5)]
    assert "media_url" in await post(client, many_urls, expect=413)
    many_attrs = fms_post(keys["fms"]) + [("attribute[x][]", str(i)) for i in range(30)]
    assert "attribute" in await post(client, many_attrs, expect=400)
    with client.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(case_t)).scalar_one() == 0


# -- FixMyStreet's status queries --------------------------------------------------------------------------


async def test_the_key_less_status_query_answers_the_public_fields_only(client, keys):
    case_id = await submit(client, fms_post(keys["fms"]))
    await route_all(client)
    params = {"service_request_id": str(case_id), "jurisdiction_id": NORDERSTEDT}  # no api_key, as FMS sends
    resp = await client.get("/open311/v2/requests.xml", params=params)
    text = await resp.text()
    assert resp.status == 200, text
    [req] = simple(text)["request"]
    assert req["service_request_id"] == str(case_id) and req["status"] == "open"
    assert set(req) <= {"service_request_id", "status", "status_notes", "service_name", "service_code",
                        "agency_responsible", "service_notice", "requested_datetime", "updated_datetime",
                        "expected_datetime"}
    for secret in ("erika", "Mustermann", "Schrank", "fms.example", "53.70"):
        assert secret not in text

    resp = await client.post(f"/api/cases/{case_id}/reply", headers={"Authorization": f"Bearer {keys['agent']}"},
                             json={"text": "Abholung am Montag."})
    assert resp.status == 201
    [req] = simple(await (await client.get("/open311/v2/requests.xml", params=params)).text())["request"]
    assert req["status"] == "closed" and req["status_notes"] == "Abholung am Montag."
    # One request by its path, too; a wrong jurisdiction does not find it.
    resp = await client.get(f"/open311/v2/requests/{case_id}.json")
    assert resp.status == 200 and "description" not in (await resp.json())[0]
    resp = await client.get(f"/open311/v2/requests/{case_id}.xml", params={"jurisdiction_id": "01060"})
    assert resp.status == 404
    # Listing still needs the key.
    resp = await client.get("/open311/v2/requests.xml", params={"jurisdiction_id": NORDERSTEDT})
    assert resp.status == 403


async def test_servicerequestupdates_as_fixmystreet_fetches_them(client, keys):
    case_id = await submit(client, fms_post(keys["fms"]))
    other = await submit(client, fms_post(keys["other"]))
    await route_all(client)
    for cid in (case_id, other):
        resp = await client.post(f"/api/cases/{cid}/reply", headers={"Authorization": f"Bearer {keys['agent']}"},
                                 json={"text": f"Antwort {cid}"})
        assert resp.status == 201
    now = datetime.now(UTC)
    w3c = "%Y-%m-%dT%H:%M:%SZ"
    params = {"api_key": keys["fms"], "start_date": (now - timedelta(hours=2)).strftime(w3c),
              "end_date": (now + timedelta(minutes=1)).strftime(w3c), "jurisdiction_id": NORDERSTEDT}
    resp = await client.get("/open311/v2/servicerequestupdates.xml", params=params)
    text = await resp.text()
    assert resp.status == 200, text
    assert ET.fromstring(text.encode()).tag == "service_request_updates"
    [update] = simple(text)["request_update"]
    assert update["service_request_id"] == str(case_id) and update["status"] == "closed"
    assert update["description"] == f"Antwort {case_id}" and update["update_id"]
    assert update["updated_datetime"].startswith(now.astimezone().strftime("%Y-"))
    # Open311.pm sends both dates or neither.
    resp = await client.get("/open311/v2/servicerequestupdates.xml",
                            params={"api_key": keys["fms"], "start_date": params["start_date"]})
    assert resp.status == 400
    resp = await client.get("/open311/v2/servicerequestupdates.json", params={"api_key": keys["fms"]})
    assert [u["service_request_id"] for u in await resp.json()] == [str(case_id)]
    resp = await client.get("/open311/v2/servicerequestupdates.xml", params={"jurisdiction_id": NORDERSTEDT})
    assert resp.status == 403


# -- jurisdictions -----------------------------------------------------------------------------------------


async def test_jurisdiction_selects_services_and_requests(client, keys, kb):
    async def codes(jid: str | None) -> list[str]:
        resp = await client.get("/open311/v2/services.json", params={"jurisdiction_id": jid} if jid else {})
        assert resp.status == 200
        return [s["service_code"] for s in await resp.json()]

    everything, kreis, muenchen = await codes(None), await codes("01060"), await codes(MUENCHEN)
    assert len(everything) == len(kb.services)
    assert 0 < len(kreis) < len(everything) and set(kreis) <= set(everything)
    assert muenchen == []  # the demo catalogue has no office in München
    assert "sh-sperrmuell" in kreis

    in_norderstedt = await submit(client, fms_post(keys["fms"]))
    in_kreis = await submit(client, fms_post(keys["fms"], jurisdiction_id="01060"))
    for jid, expected in ((NORDERSTEDT, [in_norderstedt]), ("01060", [in_kreis])):
        resp = await client.get("/open311/v2/requests.json", params={"api_key": keys["fms"], "jurisdiction_id": jid})
        assert [int(r["service_request_id"]) for r in await resp.json()] == expected


async def test_lat_long_outside_the_jurisdiction_is_400(client, keys):
    text = await post(client, fms_post(keys["fms"], lat="48.137150", long="11.575490"), expect=400)  # München
    assert "außerhalb der jurisdiction" in text and "Norderstedt" in text
    with client.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(case_t)).scalar_one() == 0


async def test_a_comment_posted_as_fixmystreet_does_joins_the_case_once(client, keys):
    case_id = await submit(client, fms_post(keys["fms"]))
    # Open311.pm's _populate_service_request_update_params (a comment by another FixMyStreet user).
    update = [("jurisdiction_id", NORDERSTEDT), ("api_key", keys["fms"]), ("updated_datetime", "2026-12-02T09:15:00Z"),
              ("service_request_id", str(case_id)), ("status", "OPEN"), ("description", "Der Schrank steht noch da."),
              ("last_name", "Schmidt"), ("first_name", "Max"), ("email", "max@example.org"), ("update_id", "9001"),
              ("media_url", "https://fms.example/photo/c/9001.full.jpeg")]
    for _ in range(2):  # FixMyStreet sends again when it did not get the answer: stored once
        resp = await client.post("/open311/v2/servicerequestupdates.xml", data=urlencode(update), headers=FORM)
        text = await resp.text()
        assert resp.status == 200, text
        assert ET.fromstring(text.encode()).tag == "service_request_updates"
        update_id = simple(text)["request_update"][0]["update_id"]
        assert update_id.isdigit()
    with client.engine.connect() as conn:
        msgs = conn.execute(select(message_t).where(message_t.c.case_id == case_id).order_by(message_t.c.id)
                            ).mappings().all()
        row = conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one()
    assert len(msgs) == 2 and msgs[1]["id"] == int(update_id) and msgs[1]["channel"] == "open311"
    assert msgs[1]["text"].startswith("Der Schrank steht noch da.") and "Max Schmidt <max@example.org>" in msgs[1]["text"]
    assert row["contact_email"] == "erika@example.org"  # the commenter is not made the case's citizen
    # Only the list of requests shows the request, not the comment.
    obj = simple(await (await client.get("/open311/v2/requests.xml", params={"api_key": keys["fms"]})).text())
    assert [r["service_request_id"] for r in obj["request"]] == [str(case_id)]
    # Another key cannot comment on it; an unknown id is 404; a bad one 400.
    for key, rid, status in ((keys["other"], str(case_id), 404), (keys["fms"], "99999", 404), (keys["fms"], "x", 400)):
        body = [(k, key if k == "api_key" else rid if k == "service_request_id" else v) for k, v in update]
        resp = await client.post("/open311/v2/servicerequestupdates.xml", data=urlencode(body), headers=FORM)
        assert resp.status == status, await resp.text()
