// Ask before destructive actions marked data-confirm (works without htmx too).
document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) { event.preventDefault(); }
}, true);

// Template editor: a variable button inserts its `$name` at the cursor of the
// subject or body, whichever was focused last (the one named by data-insert-default otherwise).
(function () {
  var lastField = null;
  document.addEventListener("focusin", function (event) {
    if (event.target.hasAttribute && event.target.hasAttribute("data-insert-target")) { lastField = event.target; }
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-insert]");
    if (!button) { return; }
    var panel = button.closest("[data-insert-default]");
    var field = lastField && document.contains(lastField) ? lastField
      : document.getElementById(panel ? panel.getAttribute("data-insert-default") : "body");
    if (!field) { return; }
    field.setRangeText(button.getAttribute("data-insert"), field.selectionStart, field.selectionEnd, "end");
    field.focus();
    // Tell the live preview (and anything else listening) that the text changed.
    field.dispatchEvent(new Event("input", { bubbles: true }));
  });
})();

// A list of choices that fills another field (Inbound: a folder picked from the server's list).
document.addEventListener("change", function (event) {
  var target = event.target.getAttribute && event.target.getAttribute("data-fills");
  var field = target && document.getElementById(target);
  if (field) { field.value = event.target.value; }
});

// Outbound (SMTP) settings: the port follows the security, presets fill the server, the
// TLS-verification warning follows its checkbox, Enter in "Send test to" tests.
(function () {
  var form = document.getElementById("smtp-form");
  if (!form) { return; }
  var ports = JSON.parse(form.getAttribute("data-ports"));
  var usual = Object.keys(ports).map(function (k) { return String(ports[k]); });
  var el = form.elements;
  el.security.addEventListener("change", function () {
    // A custom port (e.g. 2525) is the admin's choice; only the usual ones follow the security.
    if (el.port.value === "" || usual.indexOf(el.port.value.trim()) !== -1) { el.port.value = ports[el.security.value]; }
  });
  form.querySelectorAll("[data-preset]").forEach(function (button) {
    button.addEventListener("click", function () {
      el.host.value = button.dataset.host;
      el.port.value = button.dataset.port;
      el.security.value = button.dataset.security;
      // The big providers refuse or are retiring password sign-in: OAuth 2.0 is their default.
      form.querySelector("input[name=auth_method][value=oauth2]").checked = true;
      el.oauth_provider.value = button.dataset.oauthProvider;
      form.querySelectorAll("[data-preset-note]").forEach(function (note) {
        note.classList.toggle("chosen", note.dataset.presetNote === button.dataset.preset);
      });
      el.username.focus();
    });
  });
  el.test_to.addEventListener("keydown", function (event) {
    if (event.key === "Enter") { event.preventDefault(); document.getElementById("smtp-test-button").click(); }
  });
})();

// A "verify TLS" checkbox shows its warning while it is off (Outbound and Inbound settings).
document.addEventListener("change", function (event) {
  var id = event.target.getAttribute && event.target.getAttribute("data-warning");
  var warning = id && document.getElementById(id);
  if (warning) { warning.hidden = event.target.checked; }
});
