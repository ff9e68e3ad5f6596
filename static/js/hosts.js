/*
 * The live page's per-host table: requests in flight to each host across every
 * worker, and the limit that applies (the adaptive one for an autothrottle job).
 * job.js fetches the stats and announces them with a "batchfetch:stats" event;
 * this renders their "hosts" part. Text only (textContent), under the page's CSP.
 */
(function () {
  "use strict";

  var section = document.getElementById("hosts");
  var body = document.getElementById("hosts-body");
  if (!section || !body) {
    return;
  }

  function cell(row, text, numeric) {
    var td = document.createElement("td");
    td.textContent = text;
    if (numeric) {
      td.className = "num";
    }
    row.appendChild(td);
  }

  function render(hosts) {
    while (body.firstChild) {
      body.removeChild(body.firstChild);
    }
    section.hidden = hosts.length === 0;
    hosts.forEach(function (host) {
      var row = document.createElement("tr");
      row.setAttribute("data-host", host.host);
      cell(row, host.host, false);
      cell(row, String(host.in_flight), true);
      cell(row, String(host.limit), true);
      cell(row, host.paused_for > 0 ? "paused " + host.paused_for + " s" : "", false);
      body.appendChild(row);
    });
  }

  document.addEventListener("batchfetch:stats", function (event) {
    var data = event.detail || {};
    render(Array.isArray(data.hosts) ? data.hosts : []);
  });
})();
