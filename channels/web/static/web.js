/* citizen-hub web channel: suggestions while typing. Progressive enhancement only: without this
   script the "show suggestions" button asks the server for the same list. Everything the server
   sends is inserted with textContent, never as HTML. */
(function () {
  "use strict";

  var form = document.getElementById("request-form");
  if (!form || !window.fetch || !window.JSON) { return; }
  var text = document.getElementById("text");
  var place = document.getElementById("location");
  var section = document.getElementById("suggestions");
  var body = document.getElementById("suggestions-body");
  var status = document.getElementById("suggest-status");
  var datalist = document.getElementById("place-options");
  var token = form.querySelector("input[name='csrf_token']").value;
  var lang = form.querySelector("input[name='lang']").value;
  var url = form.getAttribute("data-suggest-url");
  var timer = null;
  var sequence = 0;
  var lastQuery = "";

  function el(tag, className, content) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (content !== undefined && content !== null) { node.textContent = content; }
    return node;
  }

  function safeUrl(value) {
    return /^https?:\/\//i.test(value || "") ? value : null;
  }

  function office(a, labels) {
    var box = el("div", "office");
    var name = el("p", "office-name");
    name.appendChild(el("span", "label", labels.responsible + ":"));
    name.appendChild(document.createTextNode(" " + a.name));
    if (a.is_demo) { name.appendChild(el("span", "demo", " (" + labels.demo + ")")); }
    box.appendChild(name);
    var dl = el("dl", "office-details");
    function row(label, value, href) {
      if (!value) { return; }
      dl.appendChild(el("dt", null, label));
      var dd = el("dd");
      if (href) {
        var link = el("a", null, value);
        link.href = href;
        if (/^https?:/.test(href)) { link.rel = "noopener noreferrer"; }
        dd.appendChild(link);
      } else {
        dd.textContent = value;
      }
      dl.appendChild(dd);
    }
    row(labels.address, a.address);
    row(labels.phone, a.phone, a.phone ? "tel:" + a.phone.replace(/[\s-]/g, "") : null);
    row(labels.email, a.email, a.email ? "mailto:" + a.email : null);
    row(labels.website, safeUrl(a.website), safeUrl(a.website));
    row(labels.hours, a.hours);
    box.appendChild(dl);
    return box;
  }

  function render(data) {
    var labels = data.labels;
    body.textContent = "";
    while (datalist.firstChild) { datalist.removeChild(datalist.firstChild); }
    var shown = false;
    if (data.places && data.places.length) {
      shown = true;
      var places = el("div", "places");
      places.appendChild(el("p", null, labels.places_heading));
      var list = el("ul", "place-list");
      data.places.forEach(function (p) {
        var item = el("li");
        var button = el("button", "link-button", p.label);
        button.type = "submit";
        button.name = "pick_location";
        button.value = p.value;
        button.setAttribute("data-place", p.value);
        item.appendChild(button);
        list.appendChild(item);
        var option = el("option", null, p.label);
        option.value = p.value;
        datalist.appendChild(option);
      });
      places.appendChild(list);
      body.appendChild(places);
    } else if (data.place_unknown) {
      shown = true;
      body.appendChild(el("p", "notice", labels.places_unknown));
    }
    if (data.searched) {
      shown = true;
      if (data.services.length) {
        body.appendChild(el("p", null, labels.intro));
        var ol = el("ol", "service-list");
        data.services.forEach(function (s) {
          var li = el("li", "service");
          li.appendChild(el("h3", null, s.name));
          if (s.short_text) { li.appendChild(el("p", null, s.short_text)); }
          if (s.documents && s.documents.length) {
            li.appendChild(el("p", "label", labels.documents + ":"));
            var docs = el("ul");
            s.documents.forEach(function (d) { docs.appendChild(el("li", null, d)); });
            li.appendChild(docs);
          }
          if (s.fees) {
            var fees = el("p");
            fees.appendChild(el("span", "label", labels.fees + ":"));
            fees.appendChild(document.createTextNode(" " + s.fees));
            li.appendChild(fees);
          }
          if (safeUrl(s.online_url)) {
            var online = el("p");
            var link = el("a", null, labels.online);
            link.href = s.online_url;
            link.rel = "noopener noreferrer";
            online.appendChild(link);
            li.appendChild(online);
          }
          if (s.authority) {
            li.appendChild(office(s.authority, labels));
          } else if (s.candidates && s.candidates.length) {
            li.appendChild(el("p", "label", labels.candidates));
            var cands = el("ul", "candidates");
            s.candidates.forEach(function (c) {
              var item = el("li");
              item.appendChild(office(c.authority, labels));
              item.appendChild(el("p", "places-of", c.places.join(", ")));
              cands.appendChild(item);
            });
            li.appendChild(cands);
          } else if (s.no_authority) {
            li.appendChild(el("p", "notice", labels.no_authority));
          } else if (s.need_place) {
            li.appendChild(el("p", "notice", labels.need_place));
          }
          ol.appendChild(li);
        });
        body.appendChild(ol);
      } else {
        body.appendChild(el("p", null, labels.none));
      }
      status.textContent = data.services.length
        ? labels.count.replace("{count}", String(data.services.length)) : labels.none;
    }
    section.hidden = !shown;
  }

  function run() {
    var query = text.value.trim();
    var where = place.value.trim();
    var key = query + "\u0000" + where;
    if (key === lastQuery || (query.length < 3 && where.length < 2)) { return; }
    lastQuery = key;
    var mine = ++sequence;
    section.setAttribute("aria-busy", "true");
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
      body: JSON.stringify({text: query, location: where, lang: lang})
    }).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (data) {
      if (data && mine === sequence) { render(data); }
    }).catch(function () {
      /* The button still works: suggestions are a help, not a requirement. */
    }).then(function () {
      if (mine === sequence) { section.removeAttribute("aria-busy"); }
    });
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(run, 300);
  }

  text.addEventListener("input", schedule);
  place.addEventListener("input", schedule);
  place.addEventListener("change", schedule);

  /* Picking a suggested place fills the field here instead of sending the form. */
  section.addEventListener("click", function (event) {
    var target = event.target;
    if (target && target.getAttribute && target.getAttribute("data-place") !== null) {
      event.preventDefault();
      place.value = target.getAttribute("data-place");
      place.focus();
      run();
    }
  });

  /* "Show suggestions" (also Enter in a field) asks at once instead of reloading the page, which keeps
     the chosen files. */
  form.addEventListener("submit", function (event) {
    var submitter = event.submitter;
    if (submitter && submitter.name === "action" && submitter.value === "suggest") {
      event.preventDefault();
      lastQuery = "";
      run();
    }
  });
})();
