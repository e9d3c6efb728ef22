// Keeps the status bar live: polls the node's status every 5 s.
// Without JavaScript the bar still shows the state at page load.
(function () {
  "use strict";
  var bar = document.getElementById("statusbar");
  if (!bar) return;
  var d = bar.dataset;
  function set(field, text, ok) {
    var el = bar.querySelector('[data-field="' + field + '"]');
    if (!el) return;
    el.querySelector("b").textContent = text;
    if (ok !== undefined) {
      el.classList.toggle("st-ok", ok);
      el.classList.toggle("st-warn", !ok);
    }
  }
  function hhmm(ts) {
    var t = new Date(ts * 1000);
    return ("0" + t.getHours()).slice(-2) + ":" + ("0" + t.getMinutes()).slice(-2);
  }
  function refresh() {
    fetch("/api/v1/status", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) return;
        var k = "gps" + s.gps.state.charAt(0).toUpperCase() + s.gps.state.slice(1);
        set("gps", d[k] || s.gps.state, s.gps.state === "fix");
        set("link", s.link.mqtt === "up" ? d.linkUp : d.linkDown, s.link.mqtt === "up");
        var sat = s.link.satellite;
        if (sat && sat.present) set("sat", d.satSignal + " " + (sat.signal === null ? "?" : sat.signal) + "/5", sat.signal >= 2);
        else set("sat", d.satNone, false);
        var pending = String(s.outbox.pending);
        if (s.outbox.pending && s.outbox.oldest_pending) pending += " (" + d.oldest + " " + hhmm(s.outbox.oldest_pending) + ")";
        set("pending", pending);
        set("last_ack", s.link.last_ack ? hhmm(s.link.last_ack) : d.never);
        if (s.time) {
          var tk = "time" + s.time.source.charAt(0).toUpperCase() + s.time.source.slice(1);
          set("time", d[tk] || s.time.source, s.time.trusted);
        }
        set("store", s.store.locked ? d.storeLocked : d.storeOpen, !s.store.locked);
      })
      .catch(function () { /* node restarting: try again next tick */ });
  }
  setInterval(refresh, 5000);
})();
