// Live dashboard: polls the fleet every 10 s and refreshes the alerts and the table's state cells.
// Without JavaScript the page shows the state at load time.
(function () {
  "use strict";
  // The page's words in its language (hq/i18n.py, drawn into the page by the server).
  var w = JSON.parse(document.getElementById("hq-words").textContent);
  var names = { online: w.online, offline: w.offline, revoked: w.revoked };
  var acks = { applied: w.applied, expired: w.expired, unknown: w.ack_unknown, failed: w.failed, duplicate: w.duplicate };
  var locale = document.documentElement.lang === "en" ? "en-GB" : "uk-UA";
  function when(ts) { return ts ? new Date(ts * 1000).toLocaleString(locale) : "—"; }
  function refresh() {
    fetch("/fleet.json", { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (v) {
      if (!v) return;
      var ul = document.getElementById("alerts");
      ul.textContent = "";
      if (!v.alerts.length) { var li = document.createElement("li"); li.className = "ok"; li.textContent = w.no_alerts; ul.appendChild(li); }
      v.alerts.forEach(function (a) {
        var li = document.createElement("li"); li.className = "alert alert-" + a.code;
        var b = document.createElement("strong"); b.textContent = a.node_id; li.appendChild(b);
        li.appendChild(document.createTextNode(": " + a.message)); ul.appendChild(li);
      });
      v.nodes.forEach(function (n) {
        var row = document.getElementById("node-" + n.node_id);
        if (!row) return;
        var c = row.cells;
        c[1].textContent = names[n.status] || w.unknown; c[1].className = n.status;
        c[2].textContent = when(n.last_seen);
        c[5].textContent = when(n.position_time);
        c[7].textContent = n.records;
      });
      (v.commands || []).forEach(function (c) {
        var row = document.getElementById("cmd-" + c.id);
        if (!row || !c.acked_at) return;
        var cell = row.cells[4];
        cell.className = "ack-" + c.result;
        cell.textContent = (acks[c.result] || c.result) + " (" + w.ack_as_of.replace("{when}", when(c.acked_at)) + ")";
      });
      document.dispatchEvent(new CustomEvent("hq-fleet", { detail: v }));
    }).catch(function () {});
  }
  setInterval(refresh, 10000);
})();
