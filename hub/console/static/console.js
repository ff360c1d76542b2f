/* citizen-hub agent console: search as you type, keyboard first; calls; live queue (server-sent events).
 *
 * Every value from the server is put into the page with textContent or as an attribute value, never as
 * HTML, so citizen text and catalogue text cannot become markup. Links are only set for http(s), tel and
 * mailto. The pages work without this script (forms post normally); it makes them faster to use.
 */
(function () {
  "use strict";

  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var CSRF = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var DEBOUNCE_MS = 25;
  var CARD_DEBOUNCE_MS = 60;   // the card follows the highlight once the arrow keys or the mouse rest
  var PICKER_DEBOUNCE_MS = 120;
  var STATE_LABELS = {
    new: "neu", routed: "zugeordnet", needs_clarification: "zu klären", waiting_for_citizen: "wartet auf Bürger",
    answered: "beantwortet", forwarded: "weitergeleitet", closed: "geschlossen", dead_letter: "unzustellbar"
  };
  var KIND_LABELS = { request: "Anfrage", reply: "Antwort", forward: "Weiterleitung", follow_up: "Nachtrag",
                      auto_reply: "automatische Antwort", confirmation: "Eingangsbestätigung", note: "Notiz" };
  var SEND_STATE_LABELS = { pending: "wartet auf Versand", sending: "wird gesendet", sent: "gesendet",
                            failed: "fehlgeschlagen", uncertain: "unklar, ob zugestellt" };
  var CHANNEL_LABELS = { api: "API", web: "Web", email: "E-Mail", sms: "SMS", phone: "Telefon", paper: "Papier", open311: "Open311" };
  var DAYS = [["mon", "Mo"], ["tue", "Di"], ["wed", "Mi"], ["thu", "Do"], ["fri", "Fr"], ["sat", "Sa"], ["sun", "So"]];

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function safeHref(url) {
    if (typeof url !== "string") return null;
    // Links of the catalogue (http, tel, mailto) and the console's own pages; never javascript: or //host.
    return /^(https?:\/\/|tel:|mailto:|\/console\/)/i.test(url) ? url : null;
  }

  /* el("p", {class: "x"}, "text", child, ...) – children that are strings become text nodes. */
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) return;
        if (key === "href") {
          var href = safeHref(value);
          if (href) node.setAttribute("href", href);
        } else {
          node.setAttribute(key, String(value));
        }
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function localTime(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    if (isNaN(d)) return "";
    return d.toLocaleString("de-DE", { timeZone: "Europe/Berlin", day: "2-digit", month: "2-digit", year: "numeric",
                                        hour: "2-digit", minute: "2-digit" });
  }

  function hoursText(hours) {
    if (!hours) return "";
    var parts = [];
    DAYS.forEach(function (d) {
      var spans = hours[d[0]];
      if (spans && spans.length) parts.push(d[1] + " " + spans.map(function (s) { return s[0] + "–" + s[1]; }).join(", "));
    });
    return parts.join("; ");
  }

  function toLogin() {
    window.location.href = "/console/login?next=" + encodeURIComponent(window.location.pathname + window.location.search);
  }

  function postJSON(url, data) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": CSRF },
      body: JSON.stringify(data)
    }).then(function (r) {
      if (r.status === 401) { toLogin(); throw new Error("Bitte neu anmelden."); }
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) throw new Error(body.error || ("Serverfehler " + r.status));
        return body;
      });
    });
  }

  function formObject(form) {
    var out = {};
    new FormData(form).forEach(function (value, key) { if (typeof value === "string") out[key] = value; });
    return out;
  }

  /* ---------------------------------------------------------------- lookup ---------------------------- */

  function renderCard(card, answer) {
    clear(card);
    if (!answer) {
      card.dataset.serviceId = ""; card.dataset.authorityId = "";
      card.appendChild(el("p", { class: "hint" }, "Tippen Sie das Anliegen ein; ↑/↓ oder die Maus wählen, die Karte folgt dem markierten Treffer."));
      return;
    }
    var s = answer.service;
    var a = answer.authority;
    card.dataset.serviceId = s.id;
    card.dataset.authorityId = a ? a.id : "";
    card.appendChild(el("h2", { id: "card-title" }, s.name));
    if (s.short_text) card.appendChild(el("p", { class: "short" }, s.short_text));
    var dl = el("dl", { class: "facts" });
    if (s.documents && s.documents.length) {
      var ul = el("ul", { class: "docs" });
      s.documents.forEach(function (d) { ul.appendChild(el("li", null, d)); });
      dl.appendChild(el("dt", null, "Mitbringen")); dl.appendChild(el("dd", null, ul));
    }
    if (s.fees) { dl.appendChild(el("dt", null, "Gebühren")); dl.appendChild(el("dd", { class: "fees" }, s.fees)); }
    if (s.processing_time) {
      dl.appendChild(el("dt", null, "Bearbeitungszeit")); dl.appendChild(el("dd", { class: "ptime" }, s.processing_time));
    }
    if (s.online_url) {
      dl.appendChild(el("dt", null, "Online"));
      dl.appendChild(el("dd", null, el("a", { href: s.online_url, rel: "noopener noreferrer", target: "_blank", class: "online" }, s.online_url)));
    }
    card.appendChild(dl);
    if (s.origin) card.appendChild(el("p", { class: "origin" }, s.origin));
    if (a) {
      var sec = el("section", { class: "authority", "data-authority-id": a.id });
      sec.appendChild(el("h3", null, "Zuständig: ", el("span", { class: "authority-name" }, a.name),
                         a.is_demo ? el("small", null, " (Demo-Daten)") : null));
      var address = [a.street, ((a.postcode || "") + " " + (a.city || "")).trim()].filter(Boolean).join(", ");
      if (address) sec.appendChild(el("p", { class: "address" }, address));
      var contact = el("p", { class: "contact" });
      if (a.phone) contact.appendChild(el("span", null, "Tel. ", el("a", { href: "tel:" + a.phone.replace(/[^0-9+]/g, ""), class: "phone" }, a.phone)));
      if (a.email) contact.appendChild(el("span", null, el("a", { href: "mailto:" + a.email, class: "email" }, a.email)));
      if (a.website) contact.appendChild(el("span", null, el("a", { href: a.website, rel: "noopener noreferrer", target: "_blank" }, a.website)));
      sec.appendChild(contact);
      var hours = a.hours_text || hoursText(a.opening_hours);
      if (hours) {
        var badge = null;
        if (a.open_now === true) badge = el("span", { class: "badge open", "data-open": "yes" }, "jetzt geöffnet");
        else if (a.open_now === false) badge = el("span", { class: "badge closed", "data-open": "no" }, "jetzt geschlossen");
        sec.appendChild(el("p", { class: "hours" }, hours + " ", badge));
      }
      if (answer.other_locations_total) {
        // A city's other locations for the same service (the server's card shows the same).
        var others = el("details", { class: "other-locations" },
                        el("summary", null, "Auch an " + answer.other_locations_total + " weiteren Standorten"));
        var olist = el("ul");
        (answer.other_locations || []).forEach(function (o) {
          olist.appendChild(el("li", { "data-authority-id": o.id }, o.name + (o.street ? ", " + o.street : "") +
                                                                  (o.phone ? " · Tel. " + o.phone : "")));
        });
        var rest = answer.other_locations_total - (answer.other_locations || []).length;
        if (rest > 0) olist.appendChild(el("li", null, "… und " + rest + " weitere"));
        others.appendChild(olist);
        sec.appendChild(others);
      }
      var placeField = $("#place");
      var formUrl = "/console/paper/form?service=" + encodeURIComponent(s.id) +
        "&location=" + encodeURIComponent(placeField ? placeField.value : "");
      sec.appendChild(el("p", { class: "paper-form" },
        el("a", { class: "button", id: "paper-form-link", href: formUrl, download: "" }, "Formular per Post senden (PDF)")));
      card.appendChild(sec);
    } else if (answer.authority_candidates && answer.authority_candidates.length) {
      var cand = el("section", { class: "authority candidates" }, el("h3", null, "Zuständig je nach Ort"));
      var list = el("ul");
      answer.authority_candidates.forEach(function (c) {
        var places = c.places.slice(0, 6).join(", ") + (c.places.length > 6 ? " …" : "");
        var pick = el("button", { type: "button", class: "link pick-authority", "data-authority-id": c.authority.id }, "wählen");
        list.appendChild(el("li", null, el("strong", null, c.authority.name), ": " + places + " ", pick));
      });
      cand.appendChild(list);
      card.appendChild(cand);
    } else if (answer.responsibility && answer.responsibility.reason) {
      card.appendChild(el("p", { class: "warn" }, "Zuständigkeit unbekannt: " + answer.responsibility.reason));
    } else {
      card.appendChild(el("p", { class: "hint" }, "Für die zuständige Stelle den Ort des Anrufers eingeben."));
    }
  }

  function initLookup() {
    var form = $("#search-form");
    var q = $("#q");
    var place = $("#place");
    var results = $("#results");
    var card = $("#card");
    var timing = $("#timing");
    var placeStatus = $("#place-status");
    var choices = $("#place-choices");
    if (!form || !q || !results || !card) return;

    var data = null;          // the last lookup answer
    var dataKey = null;       // the (q, place) it answers
    var active = -1;          // highlighted result
    var controller = null;    // aborts the request of an older keystroke
    var timer = null;
    var seq = 0;
    var running = null;       // promise of the request in flight
    var cardTimer = null;     // the card follows the highlight, debounced
    var keepServerCard = !!card.dataset.serviceId;

    function key() { return q.value + "\u0000" + place.value; }

    function run() {
      if (timer) { clearTimeout(timer); timer = null; }
      if (controller) controller.abort();
      controller = new AbortController();
      var mine = ++seq;
      var asked = key();
      var params = new URLSearchParams({ q: q.value, location: place.value });
      var started = performance.now();
      running = fetch("/console/api/lookup?" + params.toString(), {
        signal: controller.signal, credentials: "same-origin", headers: { "Accept": "application/json" }
      }).then(function (r) {
        if (r.status === 401) { toLogin(); throw new Error("login"); }
        if (!r.ok) throw new Error("Serverfehler " + r.status);
        return r.json();
      }).then(function (body) {
        if (mine !== seq) return;
        var ms = performance.now() - started;
        data = body; dataKey = asked;
        active = body.results.length ? 0 : -1;
        if (keepServerCard) {
          // The page came with a chosen card (?service=): keep it highlighted instead of the first hit.
          keepServerCard = false;
          body.results.forEach(function (r, i) { if (r.service.id === card.dataset.serviceId) active = i; });
        }
        renderResults(); renderPlace();
        scheduleCard();
        timing.textContent = body.results.length + " Treffer · " + Math.round(ms) + " ms";
        timing.dataset.ms = String(Math.round(ms));
        timing.dataset.serverMs = String(body.took_ms);
      }).catch(function (err) {
        if (err.name === "AbortError" || err.message === "login") return;
        timing.textContent = "Suche fehlgeschlagen: " + err.message;
      });
      return running;
    }

    function schedule() {
      if (timer) clearTimeout(timer);
      timer = setTimeout(run, DEBOUNCE_MS);
    }

    function renderResults() {
      clear(results);
      if (!data) return;
      data.results.forEach(function (r, i) {
        var li = el("li", { role: "option", id: "opt-" + i, "data-service-id": r.service.id,
                            "aria-selected": i === active ? "true" : "false" },
                    el("span", { class: "name" }, r.service.name),
                    el("span", { class: "who" }, r.authority ? r.authority.name : ""));
        li.addEventListener("mousedown", function (e) { e.preventDefault(); active = i; highlight(); openCard(); });
        li.addEventListener("mouseenter", function () { if (active !== i) { active = i; highlight(); scheduleCard(); } });
        results.appendChild(li);
      });
      if (data.query && !data.results.length) results.appendChild(el("li", { class: "empty" }, "Keine passende Leistung gefunden."));
      q.setAttribute("aria-expanded", data.results.length ? "true" : "false");
      if (active >= 0) q.setAttribute("aria-activedescendant", "opt-" + active);
      else q.removeAttribute("aria-activedescendant");
    }

    function renderPlace() {
      clear(choices);
      if (!data) return;
      if (data.location) {
        placeStatus.textContent = data.location.name;
        placeStatus.dataset.ars = data.location.ars;
      } else if (data.location_candidates && data.location_candidates.length) {
        placeStatus.textContent = "mehrdeutig – bitte wählen";
        data.location_candidates.forEach(function (c) {
          var b = el("button", { type: "button", class: "choice", "data-ars": c.ars }, c.name);
          b.addEventListener("click", function () { place.value = c.ars; keepPlace(); run().then(function () { q.focus(); }); });
          choices.appendChild(b);
        });
      } else {
        placeStatus.textContent = place.value.trim() ? "unbekannter Ort" : "";
      }
    }

    function highlight() {
      $all("li[role=option]", results).forEach(function (li, i) { li.setAttribute("aria-selected", i === active ? "true" : "false"); });
      q.setAttribute("aria-activedescendant", "opt-" + active);
    }

    function move(step) {
      if (!data || !data.results.length) return;
      active = (active + step + data.results.length) % data.results.length;
      highlight();
      var current = $("#opt-" + active);
      if (current && current.scrollIntoView) current.scrollIntoView({ block: "nearest" });
      scheduleCard();
    }

    function scheduleCard() {
      if (cardTimer) clearTimeout(cardTimer);
      cardTimer = setTimeout(function () { cardTimer = null; openCard(); }, CARD_DEBOUNCE_MS);
    }

    function openCard() {
      if (cardTimer) { clearTimeout(cardTimer); cardTimer = null; }
      if (!data || active < 0 || !data.results[active]) return;
      var answer = data.results[active];
      if (card.dataset.serviceId === answer.service.id && card.dataset.shownFor === dataKey) return;
      renderCard(card, answer);
      card.dataset.shownFor = dataKey;
      setCallFields(answer.service.id, answer.authority ? answer.authority.id : "");
    }

    function setCallFields(serviceId, authorityId) {
      $all("form.call-action").forEach(function (f) {
        f.elements.service_id.value = serviceId;
        f.elements.authority_id.value = authorityId;
        f.elements.place.value = place.value;
      });
    }

    card.addEventListener("click", function (e) {
      var pick = e.target.closest ? e.target.closest(".pick-authority") : null;
      if (pick) {
        card.dataset.authorityId = pick.getAttribute("data-authority-id");
        setCallFields(card.dataset.serviceId, card.dataset.authorityId);
        pick.textContent = "gewählt";
      }
    });

    /* The place stays set for the whole call: it is kept in the address too, so that a reload or a
       page opened from the results during the call still has it. It is cleared when the call ends. */
    function keepPlace() {
      var url = new URL(window.location.href);
      if (place.value.trim()) url.searchParams.set("place", place.value); else url.searchParams.delete("place");
      window.history.replaceState(null, "", url.pathname + url.search);
    }

    q.addEventListener("input", schedule);
    place.addEventListener("input", function () { keepPlace(); schedule(); });
    q.addEventListener("keydown", function (e) {
      if (e.key === "ArrowDown") { e.preventDefault(); move(1); }
      else if (e.key === "ArrowUp") { e.preventDefault(); move(-1); }
      else if (e.key === "Enter") {
        e.preventDefault();
        // Enter right after typing: wait for the answer to exactly these words, then open.
        var ready = (timer || dataKey !== key()) ? run() : (running || Promise.resolve());
        ready.then(openCard);
      } else if (e.key === "Escape") { q.value = ""; data = null; renderResults(); renderCard(card, null); }
    });
    place.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); run().then(function () { q.focus(); }); }
    });
    form.addEventListener("submit", function (e) { e.preventDefault(); run(); });
    document.addEventListener("keydown", function (e) {
      var tag = (e.target && e.target.tagName) || "";
      if (e.key === "/" && !/^(INPUT|TEXTAREA|SELECT)$/.test(tag)) { e.preventDefault(); q.focus(); q.select(); }
    });

    initCalls(place, q, function reset() {
      place.value = ""; q.value = ""; data = null; dataKey = null;
      renderResults(); renderPlace(); renderCard(card, null); placeStatus.textContent = "";
      timing.textContent = ""; delete timing.dataset.ms; delete timing.dataset.serverMs;
      setCallFields("", "");
      keepPlace();
    });
    if (q.value || place.value) run();
  }

  /* ---------------------------------------------------------------- calls ----------------------------- */

  function initCalls(place, q, resetLookup) {
    var panel = $("#call-panel");
    if (!panel) return;
    var start = $("#call-start");
    var activeBox = $("#call-active");
    var callIdText = $("#call-id");
    var result = $("#call-result");
    var callId = panel.dataset.callId || "";

    function setCall(id) {
      callId = id ? String(id) : "";
      panel.dataset.callId = callId;
      callIdText.textContent = callId;
      start.hidden = !!callId;
      activeBox.hidden = !callId;
      $all("form.call-action").forEach(function (f) {
        var action = f.getAttribute("action").replace(/\/console\/calls\/[^/]+\//, "/console/calls/" + (callId || "0") + "/");
        f.setAttribute("action", action);
      });
      var url = new URL(window.location.href);
      if (callId) url.searchParams.set("call", callId); else url.searchParams.delete("call");
      url.searchParams.delete("done");
      window.history.replaceState(null, "", url.pathname + url.search);
    }

    function say(text, isError) {
      result.textContent = text;
      result.className = "result" + (isError ? " error" : "");
    }

    start.addEventListener("submit", function (e) {
      e.preventDefault();
      var body = formObject(start);
      body.place = place.value;
      postJSON(start.getAttribute("action"), body).then(function (res) {
        setCall(res.call_id);
        say("Anruf " + res.call_id + " läuft.");
        q.focus();
      }).catch(function (err) { say(err.message, true); });
    });

    $all("form.call-action").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        e.preventDefault();
        var body = formObject(f);
        body.place = place.value;
        postJSON(f.getAttribute("action"), body).then(function (res) {
          if (f.id === "call-forward") {
            say("Weitergeleitet an " + res.authority.name + " (Fall " + res.case_id + "), Antwort fällig bis " +
                localTime(res.forward_due) + ".");
            f.reset();
            $("#forward-box").open = false;
            setCall(""); resetLookup();
          } else if (f.id === "call-first") {
            say("Anruf beendet: beim Erstkontakt beantwortet.");
            setCall(""); resetLookup();
          } else {
            say("Auskunft ist im Postausgang (Fall " + res.case_id + ").");
            $("#send-box").open = false;
          }
          q.focus();
        }).catch(function (err) { say(err.message, true); });
      });
    });
  }

  /* ---------------------------------------------------------------- live updates ---------------------- */

  function openEvents(onCase, indicator) {
    if (!window.EventSource) return null;
    var source = new EventSource("/console/events");
    source.addEventListener("open", function () { if (indicator) indicator.classList.add("on"); });
    source.addEventListener("error", function () { if (indicator) indicator.classList.remove("on"); });
    source.addEventListener("case", function (e) {
      try { onCase(JSON.parse(e.data)); } catch (err) { /* ignore a malformed event */ }
    });
    source.addEventListener("resync", function () { onCase(null); });
    source.addEventListener("logout", function () { source.close(); toLogin(); });
    return source;
  }

  function initQueue() {
    var body = $("#queue-body");
    if (!body) return;
    var total = $("#queue-total");
    var pending = null;

    function refresh() {
      pending = null;
      fetch("/console/api/queue" + window.location.search, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (r.status === 401) { toLogin(); throw new Error("login"); } return r.json(); })
        .then(function (data) {
          clear(body);
          data.cases.forEach(function (c) {
            var tr = el("tr", { class: c.sla.overdue ? "overdue" : "", "data-case-id": c.id },
              el("td", null, el("a", { href: window.location.origin + "/console/cases/" + c.id }, "#" + c.id)),
              el("td", null, c.created_local),
              el("td", null, CHANNEL_LABELS[c.channel] || c.channel),
              el("td", null, STATE_LABELS[c.state] || c.state,
                 c.callback ? el("strong", { "class": "callback" }, " Rückruf erbeten") : null),
              el("td", null, c.service ? c.service.name : "–"),
              el("td", null, c.authority ? c.authority.name : "–"),
              el("td", null, c.due_local, c.sla.overdue ? el("strong", null, " überfällig") : null));
            body.appendChild(tr);
          });
          total.textContent = String(data.total);
          body.dataset.refreshed = String(Date.now());
        }).catch(function () { /* the next event tries again */ });
    }

    openEvents(function () { if (!pending) pending = setTimeout(refresh, 150); }, $("#live"));
  }

  /* ---------------------------------------------------------------- case: pickers, text blocks ------- */

  /* A picker: a search field and a list of radio buttons (the page's own no-JS result list). Typing asks
     the case's offices/services endpoint; ↑/↓ or the mouse highlight a hit and choose it, Enter keeps the
     choice (instead of loading the page), clicking chooses. The server checks the chosen id again. */
  function initPicker(box) {
    var kind = box.getAttribute("data-picker");          // "offices" or "services"
    var caseId = box.getAttribute("data-case-id");
    var input = $("input[type=search]", box);
    var list = $(".picker-list", box);
    var field = kind === "offices" ? "authority_id" : "service_id";
    var timer = null, controller = null, active = -1;

    function options() { return $all("li[role=option]", list); }

    function choose(i) {
      var opts = options();
      if (!opts.length) return;
      active = (i + opts.length) % opts.length;
      opts.forEach(function (li, j) {
        li.setAttribute("aria-selected", j === active ? "true" : "false");
        var radio = $("input[type=radio]", li);
        if (radio) radio.checked = j === active;
      });
      input.setAttribute("aria-activedescendant", opts[active].id || "");
      var radio = $("input[type=radio]", opts[active]);
      if (radio) radio.dispatchEvent(new Event("change", { bubbles: true }));
    }

    function item(value, label, extra, i, authority) {
      var radio = el("input", { type: "radio", name: field, value: value });
      var li = el("li", { role: "option", id: input.id + "-opt-" + i, "aria-selected": "false",
                          "data-authority-id": authority ? authority.id : null,
                          "data-authority-name": authority ? authority.name : null },
                  el("label", null, radio, " " + label + " ", extra ? el("small", null, extra) : null));
      li.addEventListener("mouseenter", function () { choose(i); });
      li.addEventListener("mousedown", function (e) { e.preventDefault(); choose(i); });
      return li;
    }

    function render(body) {
      clear(list);
      var rows = kind === "offices" ? body.offices : body.services;
      rows.forEach(function (r, i) {
        if (kind === "offices") {
          list.appendChild(item(r.id, r.name, [r.address, r.why ? "(" + r.why + ")" : ""].filter(Boolean).join(" "), i, null));
        } else {
          list.appendChild(item(r.id, r.name, r.authority ? "→ " + r.authority.name : "", i, r.authority));
        }
      });
      if (!rows.length) {
        list.appendChild(el("li", { class: "empty" }, kind === "offices" ? "Keine passende Behörde am Ort des Falls." : "Keine passende Leistung am Ort des Falls."));
      }
      input.setAttribute("aria-expanded", rows.length ? "true" : "false");
      active = -1;
      if (rows.length && kind === "services") choose(0);
      list.dataset.refreshed = String(Date.now());
    }

    function run() {
      timer = null;
      if (controller) controller.abort();
      controller = new AbortController();
      var url = "/console/api/cases/" + encodeURIComponent(caseId) + "/" + kind + "?q=" + encodeURIComponent(input.value);
      fetch(url, { signal: controller.signal, credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) {
          if (r.status === 401) { toLogin(); throw new Error("login"); }
          if (!r.ok) throw new Error("Serverfehler " + r.status);
          return r.json();
        }).then(render).catch(function (err) {
          if (err.name === "AbortError" || err.message === "login") return;
          clear(list);
          list.appendChild(el("li", { class: "empty error" }, "Suche fehlgeschlagen: " + err.message));
        });
    }

    input.addEventListener("input", function () {
      if (timer) clearTimeout(timer);
      timer = setTimeout(run, PICKER_DEBOUNCE_MS);
    });
    input.addEventListener("keydown", function (e) {
      if (e.key === "ArrowDown") { e.preventDefault(); choose(active + 1); }
      else if (e.key === "ArrowUp") { e.preventDefault(); choose(active - 1); }
      else if (e.key === "Enter") {
        e.preventDefault();   // keep the choice; do not load the page (that is the no-JS search)
        if (active < 0 && options().length) choose(0);
      }
    });
    $all(".picker-go", box).forEach(function (b) { b.hidden = true; });
    return { setOffice: function (authority) {
      if (!authority) return;
      clear(list);
      list.appendChild(item(authority.id, authority.name, "(zuständig für die gewählte Leistung)", 0, null));
      choose(0);
    } };
  }

  function initPickers() {
    var byList = {};
    $all(".picker[data-picker]").forEach(function (box) {
      var api = initPicker(box);
      var list = $(".picker-list", box);
      if (list) byList[list.id] = api;
    });
    // Choosing a service in the re-route form fills the office responsible for it at the case's place.
    $all(".picker[data-picker=services]").forEach(function (box) {
      var target = byList[box.getAttribute("data-offices")];
      if (!target) return;
      box.addEventListener("change", function (e) {
        var li = e.target.closest ? e.target.closest("li") : null;
        var id = li ? li.getAttribute("data-authority-id") : "";
        if (id) target.setOffice({ id: id, name: li.getAttribute("data-authority-name") || id });
      });
    });
  }

  /* Text blocks and the card go into the answer at the cursor (without JS the buttons reload the page). */
  function initReplyTools() {
    var text = $("#reply-text");
    if (!text) return;
    function insert(block) {
      if (!block) return;
      var start = text.selectionStart, end = text.selectionEnd, value = text.value;
      if (typeof start !== "number") { start = end = value.length; }
      var before = value.slice(0, start), after = value.slice(end);
      var lead = before && !/\n$/.test(before) ? "\n" : "";
      var tail = after && !/^\n/.test(after) ? "\n" : "";
      text.value = before + lead + block + tail + after;
      var caret = (before + lead + block).length;
      text.focus();
      text.setSelectionRange(caret, caret);
      text.dispatchEvent(new Event("input", { bubbles: true }));
    }
    var select = $("#reply-template");
    var btnTemplate = $("#btn-template");
    var btnCard = $("#btn-card");
    if (btnTemplate && select) {
      btnTemplate.addEventListener("click", function (e) {
        e.preventDefault();
        var opt = select.options[select.selectedIndex];
        insert(opt ? opt.getAttribute("data-text") : "");
      });
    }
    if (btnCard) {
      btnCard.addEventListener("click", function (e) { e.preventDefault(); insert(btnCard.getAttribute("data-text")); });
    }
  }

  function initCase() {
    var main = $("main[data-case-id]");
    if (!main) return;
    initPickers();
    initReplyTools();
    var caseId = Number(main.getAttribute("data-case-id"));
    var thread = $("#thread");
    var stateLabel = $("#case-state");

    function refresh() {
      fetch("/console/api/cases/" + caseId, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (r.status === 401) { toLogin(); throw new Error("login"); } return r.json(); })
        .then(function (c) {
          stateLabel.textContent = STATE_LABELS[c.state] || c.state;
          clear(thread);
          c.messages.forEach(function (m) {
            var header = el("header", null,
              el("span", { class: "dir" }, m.direction === "in" ? "Bürger →" : "→ " + (m.recipient || "Bürger")),
              el("span", null, CHANNEL_LABELS[m.channel] || m.channel),
              el("span", null, localTime(m.created_at)),
              m.kind !== "request" && m.kind !== "auto_reply" ? el("span", { class: "kind" }, KIND_LABELS[m.kind] || m.kind) : null,
              m.author ? el("span", { class: "author" }, m.author) : null,
              m.send_state ? el("span", { class: "send-state " + m.send_state }, SEND_STATE_LABELS[m.send_state] || m.send_state) : null);
            var art = el("article", { class: "msg " + (m.direction === "in" ? "in" : "out"), "data-message-id": m.id }, header,
              m.subject ? el("p", { class: "subject" }, m.subject) : null,
              el("div", { class: "text" }, m.text),
              m.attachments.length ? el("p", { class: "attachments" }, "Anhänge: " + m.attachments.join(", ")) : null);
            thread.appendChild(art);
          });
          thread.dataset.refreshed = String(Date.now());
        }).catch(function () { /* the next event tries again */ });
    }

    openEvents(function (event) { if (!event || event.case_id === caseId) refresh(); }, null);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.getAttribute("data-page");
    if (page === "lookup") initLookup();
    else if (page === "queue") initQueue();
    else if (page === "case") initCase();
  });
})();
