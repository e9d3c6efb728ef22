// Search-as-you-type over the service list and the documents checklist of
// the chosen service.  The plain <select> works without it.
(function () {
  "use strict";
  var search = document.getElementById("service-search");
  var select = document.getElementById("service_code");
  var data = document.getElementById("service-documents");
  var box = document.getElementById("documents");
  if (!select) return;
  var docs = data ? JSON.parse(data.textContent) : {};
  Array.prototype.forEach.call(document.querySelectorAll(".js-only"), function (el) { el.hidden = false; });
  if (search) {
    search.addEventListener("input", function () {
      var q = search.value.trim().toLowerCase();
      var first = null;
      Array.prototype.forEach.call(select.querySelectorAll("optgroup"), function (g) {
        var any = false;
        Array.prototype.forEach.call(g.querySelectorAll("option"), function (o) {
          var hit = !q || o.textContent.toLowerCase().indexOf(q) !== -1;
          o.hidden = !hit;
          o.disabled = !hit;
          if (hit) { any = true; if (!first) first = o; }
        });
        g.hidden = !any;
      });
      if (q && first && (select.selectedIndex <= 0 || select.options[select.selectedIndex].hidden)) {
        select.value = first.value;
        showDocs();
      }
    });
  }
  function showDocs() {
    var list = docs[select.value] || [];
    box.textContent = "";
    if (!list.length) return;
    var h = document.createElement("h2");
    h.textContent = data.dataset.heading;
    // a tick per document: the inventory of what the citizen handed in goes with the application (doc_received_<i>)
    var hint = document.createElement("p");
    hint.className = "hint";
    hint.textContent = data.dataset.received || "";
    var ul = document.createElement("div");
    ul.className = "received-docs";
    list.forEach(function (d, i) {
      var label = document.createElement("label");
      var box_ = document.createElement("input");
      box_.type = "checkbox";
      box_.name = "doc_received_" + i;
      box_.value = d;
      label.appendChild(box_);
      label.appendChild(document.createTextNode(" " + d));
      ul.appendChild(label);
    });
    box.appendChild(h);
    box.appendChild(hint);
    box.appendChild(ul);
  }
  select.addEventListener("change", showDocs);
})();

// A tablet that loses the van's Wi-Fi mid-form loses nothing typed.  Before the form is sent the page asks the
// van whether it can hear it (/healthz); if not, the form stays as it is (in this page's memory only: nothing
// is written to the tablet's storage) with a notice, and is sent by itself once the van answers again.
(function () {
  "use strict";
  var form = document.querySelector("form[data-offline-hold]");
  if (!form) return;
  var notice = document.getElementById("offline-notice");
  var waiting = null;
  var sending = false;

  function reachable() {
    return fetch("/healthz", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok; }, function () { return false; });
  }
  function say(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }
  function send() {
    if (sending) return;
    sending = true;
    if (waiting) { clearInterval(waiting); waiting = null; }
    var ready = window.moPhotos ? window.moPhotos.prepare(form) : Promise.resolve();
    ready.then(function () { form.submit(); }, function () { form.submit(); });
  }
  function retry() {
    if (!waiting) return;  // only a form the administrator already sent is sent by itself
    reachable().then(function (ok) {
      if (ok && !sending) { say(notice.dataset.sending); send(); }
    });
  }
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (sending) return;
    reachable().then(function (ok) {
      if (ok) { send(); return; }
      say(notice.dataset.held);
      if (!waiting) waiting = setInterval(retry, 3000);
    });
  });
  window.addEventListener("online", retry);
})();
