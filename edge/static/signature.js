// The citizen's signature on the tablet: a canvas pad (finger, stylus or mouse), sent as one PNG.
// No inline script (the van's CSP forbids them); without JavaScript the pad stays hidden and the paper is signed.
(function () {
  "use strict";
  var section = document.getElementById("signature-section");
  var canvas = document.getElementById("signature-pad");
  var form = document.getElementById("signature-form");
  if (!section || !canvas || !form || !canvas.getContext) return;
  section.hidden = false;
  var ctx = canvas.getContext("2d");
  var drawing = false, inked = false, last = null;
  function clear() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    inked = false;
  }
  function point(ev) {
    var r = canvas.getBoundingClientRect();
    return { x: (ev.clientX - r.left) * canvas.width / r.width, y: (ev.clientY - r.top) * canvas.height / r.height };
  }
  clear();
  ctx.lineWidth = 3;
  ctx.lineCap = "round";
  ctx.strokeStyle = "#000";
  canvas.style.touchAction = "none";  // a stroke must not scroll the page
  canvas.addEventListener("pointerdown", function (ev) {
    drawing = true;
    last = point(ev);
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", function (ev) {
    if (!drawing) return;
    var p = point(ev);
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    last = p;
    inked = true;
  });
  ["pointerup", "pointercancel", "pointerleave"].forEach(function (n) {
    canvas.addEventListener(n, function () { drawing = false; });
  });
  document.getElementById("signature-clear").addEventListener("click", clear);
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!inked) return;
    canvas.toBlob(function (blob) {
      var data = new FormData(form);
      data.append("signature", blob, "signature.png");
      fetch(form.action, { method: "POST", body: data, credentials: "same-origin" }).then(function (r) {
        window.location.href = r.redirected ? r.url : window.location.pathname + "?signed=1";
      });
    }, "image/png");
  });
})();
