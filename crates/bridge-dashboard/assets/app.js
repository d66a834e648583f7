// mcp-bridge dashboard: keeps the page's <main> current from /events.
// The server sends the content again whenever the store changes; nothing
// here polls. A broken stream (a hub restart) is reopened by the browser
// itself, and the header says so meanwhile.
"use strict";
(function () {
  const main = document.querySelector("main[data-events]");
  if (!main || !window.EventSource) {
    return;
  }
  const live = document.getElementById("live");
  const source = new EventSource(main.dataset.events);
  source.addEventListener("page", function (event) {
    // Server-rendered, every value already escaped.
    main.innerHTML = event.data;
    document.body.dataset.updated = String(Date.now());
  });
  source.addEventListener("login", function () {
    source.close();
    window.location.assign("/login?reason=expired");
  });
  source.addEventListener("open", function () {
    live.hidden = true;
  });
  source.addEventListener("error", function () {
    live.hidden = false;
  });
})();
