// Tribune public forms. No framework, nothing fetched: the form works without this
// script, except a form asking for a proof of work (an anti-robot computation): the
// script finds a number such that SHA-256("<page token>:<number>") starts with the
// required count of zero bits (crypto.subtle), then sends the form.
(function () {
  "use strict";
  var summary = document.getElementById("tf-errors");
  if (summary) summary.focus();
  var form = document.querySelector("form.tf-form");
  if (!form) return;
  var bits = parseInt(form.getAttribute("data-pow-bits") || "0", 10);
  if (!bits || !(window.crypto && window.crypto.subtle && window.TextEncoder)) return;
  var encoder = new TextEncoder();

  function zeroBits(buffer) {
    var bytes = new Uint8Array(buffer), count = 0;
    for (var i = 0; i < bytes.length; i++) {
      if (bytes[i] === 0) { count += 8; continue; }
      return count + Math.clz32(bytes[i]) - 24;
    }
    return count;
  }

  async function solve(token) {
    for (var nonce = 0; ; nonce++) {
      var digest = await window.crypto.subtle.digest("SHA-256", encoder.encode(token + ":" + nonce));
      if (zeroBits(digest) >= bits) return String(nonce);
    }
  }

  var solving = false;
  form.addEventListener("submit", function (event) {
    var nonceInput = form.querySelector("input[name=_pow_nonce]");
    if (nonceInput.value) return;
    event.preventDefault();
    if (solving) return;
    solving = true;
    var button = form.querySelector("button[type=submit]");
    var status = form.querySelector(".tf-pow");
    button.disabled = true;
    if (status) status.textContent = form.getAttribute("data-pow-working");
    solve(form.querySelector("input[name=_token]").value).then(function (nonce) {
      nonceInput.value = nonce;
      if (status) status.textContent = "";
      button.disabled = false;
      form.submit();
    });
  });
})();
