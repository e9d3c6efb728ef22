// Leaflet map of the fleet over the configured tile server (only loaded when --tile-url is set).
// Draws each van's last position (labelled "data as of" the van's own time) and today's track.
// Without JavaScript, or if Leaflet fails, the tile-free SVG map below stays visible.
(function () {
  "use strict";
  var el = document.getElementById("leaflet-map");
  var dataEl = document.getElementById("map-data");
  if (!el || !dataEl || !window.L) return;
  var data = JSON.parse(dataEl.textContent);
  var words = document.getElementById("hq-words");  // the page's words in its language (hq/i18n.py)
  var asOf = words ? JSON.parse(words.textContent).map_as_of : "дані станом на {when}";
  var locale = document.documentElement.lang === "en" ? "en-GB" : "uk-UA";
  function when(ts) { return ts ? new Date(ts * 1000).toLocaleString(locale) : "—"; }
  // Shown before the map is built: Leaflet sizes and fits the view to the element.
  el.hidden = false;
  var fallback = document.getElementById("svg-map");
  if (fallback) fallback.hidden = true;
  var map = L.map(el, { attributionControl: true });
  L.tileLayer(el.getAttribute("data-tiles"), { maxZoom: 19, attribution: el.getAttribute("data-attribution") || "" }).addTo(map);
  var bounds = [];
  Object.keys(data.tracks).forEach(function (nid) {
    var line = L.polyline(data.tracks[nid], { color: "#00577a", weight: 3, opacity: 0.7 }).addTo(map);
    line.bindTooltip(nid);
    data.tracks[nid].forEach(function (p) { bounds.push(p); });
  });
  var markers = {};
  data.vans.forEach(function (v) {
    var color = v.status === "online" ? "#1b5e20" : "#a4001c";
    markers[v.node_id] = L.circleMarker([v.lat, v.lon], { radius: 8, color: color, fillColor: color, fillOpacity: 0.9 })
      .addTo(map).bindTooltip(v.node_id + " · " + asOf.replace("{when}", when(v.as_of)), { permanent: true, direction: "right" });
    bounds.push([v.lat, v.lon]);
  });
  if (bounds.length) map.fitBounds(bounds, { padding: [20, 20], maxZoom: 15 }); else map.setView([49.0, 31.5], 6);
  // Live: the dashboard's poll (hq.js) dispatches the fleet; move the markers, never back in time.
  document.addEventListener("hq-fleet", function (ev) {
    ev.detail.nodes.forEach(function (n) {
      var m = markers[n.node_id];
      if (!m || n.lat === null) return;
      m.setLatLng([n.lat, n.lon]);
      m.setTooltipContent(n.node_id + " · " + asOf.replace("{when}", when(n.position_time)));
    });
  });
})();
