// Pick a point on the map instead of typing coordinates (loaded only when a tile server is configured).
// Each .pick-map names its latitude/longitude inputs (data-lat, data-lon); without them it fills the stop row
// whose coordinates were focused last (the trip-planning form), else the first row without coordinates.
// Without JavaScript or tiles the typed coordinates stay the way to set a point.
(function () {
  "use strict";
  if (!window.L) return;
  document.querySelectorAll(".pick-map").forEach(function (el) {
    var form = el.closest("form");
    var last = null;
    if (form) {
      form.addEventListener("focusin", function (e) {
        var t = e.target;
        if (t && (t.name === "lat" || t.name === "lon")) last = t.closest("tr") || null;
      });
    }
    function targets() {
      if (el.dataset.lat) return [document.getElementById(el.dataset.lat), document.getElementById(el.dataset.lon)];
      var rows = form ? Array.prototype.slice.call(form.querySelectorAll("tbody tr")) : [];
      var row = last || rows.filter(function (r) { var i = r.querySelector("input[name=lat]"); return i && !i.value; })[0];
      return row ? [row.querySelector("input[name=lat]"), row.querySelector("input[name=lon]")] : [null, null];
    }
    el.hidden = false;
    var map = L.map(el).setView([47.91, 33.39], 11);
    L.tileLayer(el.dataset.tiles, { maxZoom: 19, attribution: el.dataset.attribution || "" }).addTo(map);
    var marker = null;
    map.on("click", function (e) {
      var t = targets();
      if (!t[0] || !t[1]) return;
      t[0].value = e.latlng.lat.toFixed(5);
      t[1].value = e.latlng.lng.toFixed(5);
      t[0].dispatchEvent(new Event("change", { bubbles: true }));
      if (marker) marker.setLatLng(e.latlng); else marker = L.marker(e.latlng).addTo(map);
    });
  });
})();
