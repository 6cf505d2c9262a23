// The drawn signature of /reports/sign/<token>: strokes on the canvas become a PNG data URL in the
// hidden "image" field the form posts. A file served by the web app (never inline), so the page's
// Content-Security-Policy can forbid every inline script.
(function () {
  "use strict";
  var pad = document.getElementById("pad");
  var image = document.getElementById("image");
  if (!pad || !image) return;
  var ctx = pad.getContext("2d"), drawing = false, used = false;
  ctx.lineWidth = 2.5; ctx.lineCap = "round";
  function at(e) {
    var r = pad.getBoundingClientRect(), p = e.touches ? e.touches[0] : e;
    return [(p.clientX - r.left) * pad.width / r.width, (p.clientY - r.top) * pad.height / r.height];
  }
  function down(e) { drawing = true; used = true; var p = at(e); ctx.beginPath(); ctx.moveTo(p[0], p[1]); e.preventDefault(); }
  function move(e) { if (!drawing) return; var p = at(e); ctx.lineTo(p[0], p[1]); ctx.stroke(); e.preventDefault(); }
  function up() { drawing = false; if (used) image.value = pad.toDataURL("image/png"); }
  ["mousedown", "touchstart"].forEach(function (n) { pad.addEventListener(n, down); });
  ["mousemove", "touchmove"].forEach(function (n) { pad.addEventListener(n, move); });
  ["mouseup", "mouseleave", "touchend"].forEach(function (n) { pad.addEventListener(n, up); });
  var clear = document.getElementById("clear");
  if (clear) clear.addEventListener("click", function () {
    ctx.clearRect(0, 0, pad.width, pad.height); used = false; image.value = "";
  });
})();
