// Insight pages: a supervisor who has not chosen a time zone gets their browser's, once, via the URL.
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.search);
  if (params.has("tz")) return;
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!zone || zone === "UTC") return;
  params.set("tz", zone);
  window.location.replace(window.location.pathname + "?" + params.toString());
})();
