// The back office (/admin): every POST form and every jQuery request carries the staff session's
// CSRF token, read from <meta name="csrf-token"> (web/admin.py explains why it is added here).
(function () {
  'use strict';
  var meta = document.querySelector('meta[name="csrf-token"]');
  var token = meta ? meta.getAttribute('content') : '';
  function addToken(form) {
    if ((form.getAttribute('method') || '').toLowerCase() !== 'post') return;
    if (form.querySelector('input[name="csrf"]')) return;
    var input = document.createElement('input');
    input.type = 'hidden';
    input.name = 'csrf';
    input.value = token;
    form.appendChild(input);
  }
  document.addEventListener('submit', function (event) { addToken(event.target); }, true);
  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('form').forEach(addToken);
    if (window.jQuery) {
      window.jQuery.ajaxSetup({ headers: { 'X-CSRF-Token': token } });
    }
  });
})();
