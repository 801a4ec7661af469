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
