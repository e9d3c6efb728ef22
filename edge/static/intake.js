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
    var ul = document.createElement("ul");
    list.forEach(function (d) { var li = document.createElement("li"); li.textContent = d; ul.appendChild(li); });
    box.appendChild(h);
    box.appendChild(ul);
  }
  select.addEventListener("change", showDocs);
})();
